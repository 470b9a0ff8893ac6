package bpf

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/elftest"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

func benchNeeds(b *testing.B) {
	b.Helper()
	if unix.Geteuid() != 0 {
		b.Skip("needs root: attaches BPF programs")
	}
	if err := CheckSystem(); err != nil {
		b.Skipf("needs BPF support: %v", err)
	}
}

// emptyProgram is a tp_btf program on tracepoint tp that returns at once:
// the floor of the hook, to compare the sensor against.
func emptyProgram(b *testing.B, tp string) *ebpf.Program {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "kg_empty",
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceRawTp,
		AttachTo:   tp,
		License:    "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		b.Fatalf("load empty %s program: %v", tp, err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// attach attaches tp_btf or raw_tracepoint programs until the benchmark ends.
func attach(b *testing.B, raw bool, progs map[string]*ebpf.Program) {
	b.Helper()
	for tp, p := range progs {
		var l link.Link
		var err error
		if raw {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: p})
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: p})
		}
		if err != nil {
			b.Fatalf("attach %s: %v", tp, err)
		}
		b.Cleanup(func() { l.Close() })
	}
}

// BenchmarkGetppid measures what every other syscall pays: a getppid()
// loop with no program, an empty sys_enter program, an empty enter+exit
// pair, and the sensor (both hook flavours). scripts/bench.sh runs it with
// -count and prints the ratios; Go interleaves the variants per count.
func BenchmarkGetppid(b *testing.B) {
	benchNeeds(b)
	loop := func(b *testing.B) {
		b.ResetTimer()
		for range b.N {
			unix.Getppid()
		}
	}
	b.Run("none", loop)
	b.Run("empty", func(b *testing.B) {
		attach(b, false, map[string]*ebpf.Program{"sys_enter": emptyProgram(b, "sys_enter")})
		loop(b)
	})
	b.Run("empty_pair", func(b *testing.B) {
		attach(b, false, map[string]*ebpf.Program{
			"sys_enter": emptyProgram(b, "sys_enter"),
			"sys_exit":  emptyProgram(b, "sys_exit"),
		})
		loop(b)
	})
	for _, h := range []Hook{HookBTF, HookRaw} {
		name := "sensor"
		if h == HookRaw {
			name = "sensor_raw"
		}
		b.Run(name, func(b *testing.B) {
			s, err := NewSensor(Config{Hook: h, Logger: benchLogger(b)})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			attach(b, h == HookRaw, map[string]*ebpf.Program{
				"sys_enter": s.coll.Programs[hookPrograms[h][1].prog],
				"sys_exit":  s.coll.Programs[hookPrograms[h][0].prog],
			})
			loop(b)
		})
	}
}

// BenchmarkGetppidInterleaved is BenchmarkGetppid with the variants taken
// side by side: each iteration is one round that times a batch of getppid()
// calls under every variant in turn, so that the machine's noise hits them
// all alike. It reports each variant's median ns per call over the rounds,
// and the ratios that matter: the sensor against the empty program and
// against the empty enter+exit pair.
func BenchmarkGetppidInterleaved(b *testing.B) {
	benchNeeds(b)
	const batch = 100000
	s, err := NewSensor(Config{Hook: HookBTF, Logger: benchLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	enter, exit := emptyProgram(b, "sys_enter"), emptyProgram(b, "sys_exit")
	variants := []struct {
		name  string
		progs []*ebpf.Program
	}{
		{"none", nil},
		{"empty", []*ebpf.Program{enter}},
		{"empty_pair", []*ebpf.Program{enter, exit}},
		{"sensor", s.programs()},
	}
	// The sensor's results come from fexit where the kernel attaches it
	// (then unrelated syscalls pay sys_enter alone), else from sys_exit.
	b.Logf("sensor: %s, results from %s", s.Hook(), s.ExitSide())
	// Where the kernel allows fentry on the syscall functions (real
	// kernels, not this host), the sensor in that mode too.
	if fs, err := NewSensor(Config{Hook: HookFentry, Logger: quietLogger()}); err == nil {
		defer fs.Close()
		if fs.Hook() == HookFentry {
			variants = append(variants, struct {
				name  string
				progs []*ebpf.Program
			}{"sensor_fentry", fs.programs()})
		}
	}
	times := make([][]float64, len(variants))
	b.ResetTimer()
	for round := range b.N {
		for k := range variants {
			// Rotate the order too, so no variant always runs first.
			i := (k + round) % len(variants)
			var links []link.Link
			for _, p := range variants[i].progs {
				l, err := link.AttachTracing(link.TracingOptions{Program: p})
				if err != nil {
					b.Fatal(err)
				}
				links = append(links, l)
			}
			// Untimed first: an attach or detach rewrites kernel text
			// (the trampolines), and an emulated guest (QEMU's TCG)
			// translates the code it runs afresh after such a write.
			for range batch / 10 {
				unix.Getppid()
			}
			start := time.Now()
			for range batch {
				unix.Getppid()
			}
			times[i] = append(times[i], float64(time.Since(start).Nanoseconds())/batch)
			for _, l := range links {
				l.Close()
			}
		}
	}
	b.StopTimer()
	med := make(map[string]float64)
	for i, v := range variants {
		med[v.name] = median(times[i])
		b.ReportMetric(med[v.name], v.name+"-ns/call")
	}
	b.ReportMetric(med["sensor"]/med["empty"], "sensor/empty")
	b.ReportMetric(med["sensor"]/med["empty_pair"], "sensor/empty_pair")
	b.ReportMetric(med["sensor"]/med["none"], "sensor/none")
	if f, ok := med["sensor_fentry"]; ok {
		b.ReportMetric(f/med["none"], "sensor_fentry/none")
	}
}

// programs returns the sensor's loaded programs, in attach order.
func (s *Sensor) programs() []*ebpf.Program {
	var progs []*ebpf.Program
	for _, a := range s.attach {
		progs = append(progs, s.coll.Programs[a.prog])
	}
	return progs
}

// quietLogger drops the fallback warning of a hook this host refuses.
func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// benchLogger holds a benchmark sensor's warnings (a tracepoint this
// kernel lacks, say) until the benchmark ends, then logs them with its
// output. Written as they come, they would split the line on which go test
// prints the benchmark's name and then its results, and bench.sh and
// benchtable would lose the figures.
func benchLogger(b *testing.B) *logrus.Logger {
	w := &heldLog{}
	l := logrus.New()
	l.SetOutput(w)
	b.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.buf.Len() > 0 {
			b.Log("sensor log:\n" + w.buf.String())
		}
	})
	return l
}

type heldLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (h *heldLog) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.buf.Write(p)
}

// TestVMBench runs BenchmarkGetppidInterleaved in Debian 6.1 and 6.12,
// where fentry mode loads, and logs its figures. make bench runs it.
func TestVMBench(t *testing.T) {
	if os.Getenv("KMODGUARD_VMBENCH") != "1" {
		t.Skip("guest benchmark: set KMODGUARD_VMBENCH=1 (make bench)")
	}
	results := vmtest.Run(t, vmtest.Spec{
		Run:     "^TestGuestBenchReady$",
		Args:    []string{"-test.bench=^BenchmarkGetppidInterleaved$", "-test.benchtime=10x"},
		Timeout: 15 * time.Minute,
	})
	vmtest.LogLines(t, results, `BenchmarkGetppidInterleaved\s+\d.*`)
}

// TestGuestBenchReady checks that the guest can load the sensor, so that a
// guest run of the benchmark alone has a test verdict.
func TestGuestBenchReady(t *testing.T) {
	vmtest.RequireGuest(t)
	if err := CheckSystem(); err != nil {
		t.Fatal(err)
	}
}

// cpuTime is this process's user+system CPU time: on a shared machine it
// shows what an operation costs, where wall time shows the neighbours.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// startBench starts a sensor and a consumer that counts delivered events.
func startBench(b *testing.B, cfg Config) (*Sensor, func() int) {
	b.Helper()
	s, err := NewSensor(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	got := make(chan int)
	go func() {
		n := 0
		for range s.Events() {
			n++
		}
		got <- n
	}()
	return s, func() int { s.Close(); return <-got }
}

// BenchmarkInitModuleEvents issues init_module with a 4 KiB image from one
// thread as fast as it can; every call is a full event (process context,
// params, image, result) through the ring buffer and the Go reader. It
// reports the delivered events per second and the drops; with no drops,
// the producer was the limit.
func BenchmarkInitModuleEvents(b *testing.B) {
	benchNeeds(b)
	img := elftest.Header(make([]byte, 4096)) // not junk: each call is an event
	s, finish := startBench(b, Config{Logger: benchLogger(b)})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	for range b.N {
		unix.InitModule(img, "numdummies=3")
	}
	n := finish()
	elapsed, cpu := time.Since(start), cpuTime()-cpu
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(st.Drops), "drops")
	// Producer (syscall and BPF) and consumer CPU per call, on all cores.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/call")
}

// BenchmarkInitModulePaced finds the highest rate of init_module calls (4
// KiB images) that arrives with no drop: it offers rates from 5,000/s up,
// in bursts every 10 ms, for one second each (long enough that the ring
// buffer's slack, about 4,000 events, cannot hide a consumer slower than the
// rate), and reports the last one with zero drops.
//
// One thread issues the calls, with the sensor's programs on its syscall
// path, so past some rate it cannot keep up with what is offered. The
// search stops when the thread reaches less than 90% of the rate offered,
// and says so: producer-limited is 1 when it ended that way with nothing
// dropped (the sensor was not the limit), 0 when it ended on a drop;
// producer-max-calls/s is the highest rate the thread achieved.
func BenchmarkInitModulePaced(b *testing.B) {
	benchNeeds(b)
	img := elftest.Header(make([]byte, 4096)) // not junk: each call is an event
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best, producer, limited := 0.0, 0.0, 0.0
	for range b.N {
		for rate := 5000.0; rate <= 2e6; rate *= 1.25 {
			s, finish := startBench(b, Config{Logger: benchLogger(b)})
			// Bursts every 10 ms, sleeping in between, so that pacing
			// leaves the CPU to the reader.
			calls := int(rate)
			perTick := max(1, calls/100)
			start := time.Now()
			for i := 0; i < calls; i += perTick {
				for range min(perTick, calls-i) {
					unix.InitModule(img, "numdummies=3")
				}
				time.Sleep(time.Until(start.Add(time.Duration(i/perTick+1) * 10 * time.Millisecond)))
			}
			achieved := float64(calls) / time.Since(start).Seconds()
			n := finish()
			b.Logf("offered %.0f/s, achieved %.0f/s: %d of %d delivered, %d dropped", rate, achieved, n, calls, s.Stats().Drops)
			producer = max(producer, achieved)
			if s.Stats().Drops > 0 || n < calls {
				limited = 0
				break
			}
			best = max(best, achieved)
			if achieved < rate*0.9 {
				// The producer could not keep the pace: it no longer
				// sleeps between bursts, so a higher rate offered would
				// be a flat-out run (BenchmarkInitModuleEvents) of more
				// calls, not a paced one. Nothing was dropped on the way.
				limited = 1
				break
			}
		}
	}
	b.ReportMetric(best, "max-events/s")
	b.ReportMetric(producer, "producer-max-calls/s")
	b.ReportMetric(limited, "producer-limited")
}

// BenchmarkJunkFlood is the flood a detection-only host must survive:
// every CPU floods init_module with junk (4 KiB that fail the kernel's ELF
// header checks) flat out, while one thread loads a distinct image that
// passes them every 10 ms, for one second per iteration. It reports the
// loads delivered out of those made (goal: all of them), the flood's rate,
// and what became of it: folded, sent, dropped.
func BenchmarkJunkFlood(b *testing.B) {
	benchNeeds(b)
	var made, delivered, junk, folded, drops, sent float64
	var elapsed time.Duration
	for i := range b.N {
		s, err := NewSensor(Config{Logger: benchLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		// The real images and their digests, made before the reader
		// starts: it only reads want.
		const loads = 100
		imgs := make([][]byte, loads)
		want := map[string]bool{}
		for j := range imgs {
			imgs[j] = elftest.Header(make([]byte, 16384))
			binary.LittleEndian.PutUint64(imgs[j][200:], uint64(i*loads+j)+1)
			sum := sha256.Sum256(imgs[j])
			want[hex.EncodeToString(sum[:])] = true
		}
		var got, junkEvents int
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range s.Events() {
				switch {
				case want[ev.SHA256]:
					got++
				case ev.Syscall == event.InitModule:
					junkEvents++
				}
			}
		}()
		var stop atomic.Bool
		var calls atomic.Uint64
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				img := make([]byte, 4096)
				for !stop.Load() {
					unix.InitModule(img, "")
					calls.Add(1)
				}
			})
		}
		start := time.Now()
		runtime.LockOSThread()
		for j := range loads {
			unix.InitModule(imgs[j], "")
			time.Sleep(time.Until(start.Add(time.Duration(j+1) * 10 * time.Millisecond)))
		}
		runtime.UnlockOSThread()
		stop.Store(true)
		wg.Wait()
		elapsed += time.Since(start)
		s.Close()
		<-done
		st := s.Stats()
		made += loads
		delivered += float64(got)
		junk += float64(calls.Load())
		folded += float64(st.Coalesced)
		drops += float64(st.Drops)
		sent += float64(junkEvents)
	}
	b.ReportMetric(delivered/made, "loads-delivered/made")
	b.ReportMetric(junk/elapsed.Seconds(), "flood-calls/s")
	b.ReportMetric(folded/junk, "folded/flood")
	b.ReportMetric(sent/float64(b.N), "flood-events/op")
	b.ReportMetric(drops/float64(b.N), "drops/op")
}

// BenchmarkImageCapture measures the image path: one init_module with a 1
// MiB image per iteration, waited for until its event (with the image
// digested and inspected) comes out.
func BenchmarkImageCapture(b *testing.B) {
	benchNeeds(b)
	img := make([]byte, 1<<20)
	for i := range img {
		img[i] = byte(i * 7)
	}
	// A header that could load: junk is folded into one event a second.
	elftest.Header(img)
	s, err := NewSensor(Config{Logger: benchLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	b.SetBytes(int64(len(img)))
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		unix.InitModule(img, "")
		if ev := nextInitModule(b, s, tid); ev.Truncated || ev.Size != uint64(len(img)) {
			b.Fatalf("image truncated: %+v", ev)
		}
	}
	b.StopTimer()
	cpu = cpuTime() - cpu
	b.ReportMetric(float64(s.Stats().ChunkDrops), "chunk-drops")
	// CPU per image (kernel copy, reader, SHA-256, inspection) in MB/s.
	b.ReportMetric(float64(b.N*len(img))/cpu.Seconds()/1e6, "MB/cpu-s")
}

// nextInitModule returns the next init_module event of the thread tid. It
// fails the benchmark when none comes within 5 s (a call the sensor folded
// or dropped), instead of waiting forever.
func nextInitModule(b *testing.B, s *Sensor, tid uint32) *event.Event {
	b.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-s.Events():
			if ev.Tid == tid && ev.Syscall == event.InitModule {
				return ev
			}
		case <-timeout:
			b.Fatalf("no init_module event from thread %d within 5 s (stats %+v)", tid, s.Stats())
		}
	}
}

// BenchmarkReaderPath is the reader's CPU per init_module event, without
// the kernel: the records of one call (image chunks, the event, its
// result), laid out as the sensor sends them, go through the joiner and the
// enricher as the read loop hands them over. It isolates the user-space
// share of BenchmarkInitModuleEvents, which shares the CPU with the
// producer. Variants: the 4 KiB image those benchmarks send, the same image
// with a new digest on every call, and Debian 6.1's dummy.ko.
func BenchmarkReaderPath(b *testing.B) {
	run := func(b *testing.B, img []byte, vary bool) {
		n := newEnricher(Config{})
		sent := 0
		j := newJoiner(DefaultImageCap, n.decode, func(*event.Event) { sent++ }, func() { b.Fatal("orphan record") })
		const tid = 4242
		init := sensorKgSyscallKG_SYS_INIT_MODULE
		// A caller as the kernel describes it: strings leaf first.
		ev := eventWithData(init, tid, "", "numdummies=3\x00", "", "bpf.test\x00tmp\x00",
			"/tmp/bpf.test\x00-test.bench\x00BenchmarkReaderPath\x00",
			"docker-"+strings.Repeat("0123456789abcdef", 4)+".scope\x00system.slice\x00")
		// Fields are set in place through their offsets: a record is
		// shorter than the generated type, whose data is its largest.
		put := func(rec []byte, off uintptr, v uint64) { binary.NativeEndian.PutUint64(rec[off:], v) }
		put(ev, unsafe.Offsetof(sensorKgEvent{}.Len), uint64(len(img)))
		put(ev, unsafe.Offsetof(sensorKgEvent{}.Captured), uint64(len(img)))
		var chunks [][]byte
		for off := 0; off < len(img); off += 16384 {
			c := chunkRecord(tid, 0, uint64(off), img[off:min(off+16384, len(img))])
			put(c, unsafe.Offsetof(sensorKgChunk{}.Total), uint64(len(img)))
			chunks = append(chunks, aligned(c))
		}
		ev, exit := aligned(ev), aligned(exitRecord(init, tid, -38))
		now := time.Now()
		b.SetBytes(int64(len(img)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			ts := uint64(i + 1)
			if vary {
				// A new image each call: a cache of digests must miss.
				binary.LittleEndian.PutUint64(chunks[0][chunkHeaderSize+len(img)-8:], ts)
			}
			for _, c := range chunks {
				put(c, unsafe.Offsetof(sensorKgChunk{}.Ts), ts)
				if err := j.record(c, now); err != nil {
					b.Fatal(err)
				}
			}
			put(ev, unsafe.Offsetof(sensorKgEvent{}.Ts), ts)
			if err := j.record(ev, now); err != nil {
				b.Fatal(err)
			}
			if err := j.record(exit, now); err != nil {
				b.Fatal(err)
			}
		}
		if sent != b.N {
			b.Fatalf("%d events for %d calls", sent, b.N)
		}
	}
	small := elftest.Header(make([]byte, 4096))
	b.Run("4KiB", func(b *testing.B) { run(b, small, false) })
	b.Run("4KiB-distinct", func(b *testing.B) { run(b, slices.Clone(small), true) })
	b.Run("dummy.ko", func(b *testing.B) {
		img, err := os.ReadFile(dummyModule(b))
		if err != nil {
			b.Fatal(err)
		}
		run(b, img, false)
	})
}
