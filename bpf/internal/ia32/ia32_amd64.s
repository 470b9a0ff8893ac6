//go:build linux

#include "textflag.h"

// func int80(nr, a0, a1, a2 uintptr) uintptr
TEXT ·int80(SB), NOSPLIT, $0-40
	MOVQ nr+0(FP), AX
	MOVQ a0+8(FP), BX
	MOVQ a1+16(FP), CX
	MOVQ a2+24(FP), DX
	INT $0x80
	MOVQ AX, ret+32(FP)
	RET

// func int81()
TEXT ·int81(SB), NOSPLIT, $0-0
	INT $0x81
	RET
