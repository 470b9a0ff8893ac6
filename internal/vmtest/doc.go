// Package vmtest runs a package's tests inside real Debian kernels under
// QEMU: kernels with module loading and BPF LSM, which the development
// machines lack.
//
// # Writing a VM test
//
// A package that needs a real kernel has two kinds of tests side by side:
//
//   - Guest tests, named TestGuest..., which start with
//     vmtest.RequireGuest(t). On the host they skip; in the guest they run
//     as root on the booted kernel.
//   - One host-side test, named TestVM..., that calls vmtest.Run.
//
// For example:
//
//	func TestVM(t *testing.T) {
//		vmtest.Run(t, vmtest.Spec{
//			// fixtures from the booted kernel's own package
//			Modules: []string{"dummy", "veth"},
//			// a forged module: .modinfo says dumbo, it registers as dummy
//			Crafted: []vmtest.Crafted{{Name: "dumbo", From: "dummy", ModinfoName: "dumbo", StripSignature: true}},
//			// built statically, on PATH in the guest
//			Binaries: []string{"github.com/kmodguard/kmodguard/cmd/kmodguard"},
//		})
//	}
//
//	func TestGuestLoad(t *testing.T) {
//		vmtest.RequireGuest(t)
//		img, err := os.ReadFile(vmtest.Fixture(t, "dummy")) // plain ELF .ko
//		...
//		err = unix.InitModule(img, "")
//	}
//
// Run builds the calling package's test binary (go test -c, CGO_ENABLED=0,
// so static; Spec.CGO links a cgo package statically instead), then for each kernel of Spec.Kernels (default: Debian 6.1,
// 6.12 and sid's newest, see internal/debkernel) builds an initramfs, boots it, runs the
// guest tests matching Spec.Run (default "^TestGuest") with -test.v, and
// reports one subtest per kernel, named after its release, that carries the
// guest's output. A failed guest test, a guest test binary that exits
// non-zero, a kernel panic or oops, a hang past Spec.Timeout, and a run in
// which no test ran all fail the subtest with the kernel's name, the failed
// tests' names, and (when the guest died) the tail of its console.
// Spec.FailOnSkip also fails it when a guest test skipped.
//
// Every run logs the exact Debian package and version it booted, and
// records each boot's outcome as a Record in ResultsDir
// (KMODGUARD_VMTEST_RESULTS), from which `make matrix` generates
// docs/support-matrix.md; guest tests add to their cell with SupportNote.
//
// Boot does the same for one kernel and returns the Result without judging
// it, for tests of the harness itself. Exec boots one kernel for a program
// rather than a test, and can run a busybox shell script (Spec.Script) with
// its output streamed live (Spec.Output): `make demo` is built on it.
//
// # Switching it on
//
// Run and Boot skip unless KMODGUARD_VMTEST=1, which `make vmtest` sets
// (make vmtest runs every TestVM... test of the repository). Plain
// `go test ./...` therefore stays quick on any host, and guest tests skip
// outside a guest. KMODGUARD_VMTEST_KERNELS=6.12 (comma-separated series)
// limits Run to some kernels, for a quicker round while developing.
//
// Guests run under TCG (software emulation), one vCPU and 1 GiB unless the
// Spec says otherwise (see arm64 below for the second architecture). KMODGUARD_VMTEST_ACCEL=kvm tries KVM instead; on the
// nested development VMs it does not boot Debian's kernels (QEMU aborts on
// MSR 0x10a with -cpu host, and the kernel prints nothing with other CPU
// models), hence the default. A guest that dies before /init starts the
// tests, or has not started them within Spec.BootTimeout (3 minutes; a
// busybox guest starts in 3 to 12 s), is booted once more: an emulator
// hiccup on a starved host (a 7.2 guest once sat silent for the whole 10
// minutes of its Timeout while a C++ build ran beside it). Every other
// failure stands.
//
// # Inside the guest
//
// /init (vminit, a static Go binary) mounts proc, sysfs, devtmpfs, tmpfs on
// /tmp and /run, securityfs, bpffs, tracefs, debugfs and cgroup2, brings up
// lo, and runs the test binary as root with /vmtest as its working folder.
// On a guest with more than one CPU it first attaches, with the other CPUs
// taken offline for that moment, two no-op programs to each of the
// sys_enter and sys_exit tracepoints (HeldTracepoints), so that
// the tests' own attachments never make the kernel live-patch the syscall
// path, which multi-threaded TCG mishandles (Spec.LiveSyscallTracepoints).
// The guest has:
//
//   - busybox with all its applet links (sh, insmod, rmmod, lsmod,
//     modprobe, ip, ...);
//   - the fixtures under /vmtest/fixtures: Fixture(t, name) is the plain ELF
//     image (decompressed on the host when the kernel ships .ko.xz, so it
//     suits init_module), CompressedFixture(t, name) the file as shipped
//     (skips on kernels that ship plain .ko);
//   - the same modules and their dependencies under /lib/modules/<release>
//     with a modules.dep, so `modprobe dummy` works;
//   - Spec.Binaries under /vmtest/bin, on PATH (Binary(t, name));
//   - Spec.Files under /vmtest/files (File(t, rel));
//   - the package's testdata folder as /vmtest/testdata (up to 64 MiB), so
//     relative testdata/ paths work as under go test;
//   - the kernel's build config as /boot/config-<release> (KernelConfig);
//   - the crafted modules of Spec.Crafted (see Craft and StripSignature),
//     and whatever Spec.Prepare writes, in the fixtures folder.
//
// Release and Series say which kernel runs. The guest has no network and
// no disk; /tmp is a tmpfs.
//
// # How results come back
//
// The console (ttyS0, kernel messages and /init's own) and a second serial
// port (ttyS1, only the test output and marker lines of package proto) are
// written to files on the host. The markers carry the test binary's exit
// status; the host times the boot and the tests on its own clock as the
// markers arrive, and puts it all in Result.
//
// # A systemd guest
//
// Spec.System boots a real host instead of the busybox initramfs: Debian
// 12's systemd as PID 1 and udev loading the drivers of QEMU devices whose
// drivers are modules, from an ext4 root disk that holds Debian's own root
// file system (debkernel.SystemdRootfs, built by mmdebstrap and cached) and
// the kernel's whole modules tree. System.Install installs what the test
// needs into the root folder on the host before the disk is made; the guest
// tests run as vmtest.service once multi-user.target is reached, with the
// fixtures, Spec.Binaries and testdata under /vmtest as usual. The System
// type's comment has the details. System.Disk keeps the root disk between
// Runs, so that a second Run on another kernel is a reboot of the same host
// (a kernel upgrade). amd64 only; building the disk needs root, mmdebstrap
// and mkfs.ext4 (scripts/deps.sh vm), and a host without them skips.
// deploy/systemd's TestVMSystemd... tests use it.
//
// # arm64
//
// Spec.Arch = "arm64" boots Debian's arm64 kernels of the same series
// (6.1: what linux-image-arm64 depends on; 6.12: the newest
// linux-image-6.12.*+deb12-cloud-arm64) under qemu-system-aarch64, virt
// machine, -cpu max with QEMU's cheap pointer authentication, always TCG.
// The packages ship a plain Image, which -kernel boots as it is. Every
// guest binary (/init, the test binary, Spec.Binaries) is built with
// GOARCH=arm64; Spec.CGO is amd64 only. busybox is Debian's
// busybox-static:arm64, fetched with apt-get download and unpacked in the
// cache like the kernels; the host cannot run it, so /init makes its applet
// links (busybox --install -s). The console is the virt machine's one PL011
// (ttyAMA0); the result port is a 16550 on the PCI bus (QEMU's pci-serial),
// which the guest sees as /dev/ttyS0 (Plan.ResultPort says so to /init).
// The host needs qemu-system-arm and arm64 added to dpkg's architectures:
// scripts/deps.sh vm-arm64, which `make vmtest` runs.
//
// What runs there: the sensor's guest tests (bpf.TestVMArm64: the committed
// sensor_arm64_bpfel.o watching real init_module, finit_module and
// delete_module calls, in tp_btf, raw_tracepoint and fentry mode where the
// kernel has ftrace direct calls: 6.12 and sid, not 6.1, where the test says so),
// this package's own (TestVMArm64: on 6.1, where no BPF trampoline can be
// entered, TestGuestBPFLSM checks that an LSM program loads and its attach
// is refused), and the guard's (enforcer.TestVMArm64: every guard test on
// 6.12 and sid, with guard_arm64_bpfel.o enforcing; on 6.1 only that the guard
// refuses to load and says why). For 32-bit (aarch32) callers,
// bpf.TestVMArm64 builds a static GOARCH=arm program on the host and ships
// it with Spec.Files; the guest runs it through the kernel's compat support.
// Each arm64 boot takes 3 to 4 s to the first test on a quiet 2-core
// machine, about as long as amd64.
package vmtest
