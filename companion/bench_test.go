package companion_test

import (
	"context"
	"testing"

	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/companion/companiontest"
	"github.com/kmodguard/kmodguard/event"
)

// BenchmarkDecisionStream measures a decision's trip from the enforcer to
// its client, side by side: read in process from the enforcer's channel, and
// through the companion's gRPC stream (go-plugin's test connection, the same
// adapters as a launched companion, without TLS). Each op decides one load
// (allowlist.Match on a 1 KiB non-module image, hashed) and receives it.
func BenchmarkDecisionStream(b *testing.B) {
	img := make([]byte, 1024)
	run := func(b *testing.B, impl *companiontest.Enforcer, e companion.Enforcer) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := e.Decisions(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := impl.Load(event.OpInitModule, img, 1, uint32(i), "bench"); err != nil {
				b.Fatal(err)
			}
			if _, ok := <-ch; !ok {
				b.Fatal("stream closed")
			}
		}
	}
	b.Run("in-process", func(b *testing.B) {
		impl := companiontest.New()
		run(b, impl, impl)
	})
	b.Run("grpc", func(b *testing.B) {
		impl := companiontest.New()
		e, _ := grpcPair(b, impl)
		run(b, impl, e)
	})
}
