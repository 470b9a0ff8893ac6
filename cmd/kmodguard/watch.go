package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/inventory"
	"github.com/kmodguard/kmodguard/scan"
)

func init() { register(newWatchCmd) }

type watchOptions struct {
	format     outputFormat
	allowlist  string
	pubkey     string
	record     string
	count      int
	inventory  bool
	duration   time.Duration
	ringSize   int
	imageCap   uint64
	hook       string
	statsEvery time.Duration
	unprivRate int
	scanEvery  time.Duration
}

func newWatchCmd() *cobra.Command {
	var o watchOptions
	var out *output
	cmd := &cobra.Command{
		Use:   "watch [-o text|json|yaml] [--allowlist FILE] [--record FILE]",
		Short: "Print every init_module, finit_module and delete_module on this host, live",
		Long: `Watch loads kmodguard's eBPF sensor on the sys_enter and sys_exit tracepoints
and prints one line per module syscall, with its result and the process that
made it:

  - init_module: the image itself, read from the caller's memory (up to
    --image-cap), its names, SHA-256, vermagic and signature, and the params;
  - finit_module: the file's path as the kernel resolved it, its inode,
    device, size, mtime and ctime, and whether the file changed since
    (file_changed: any of these differs when watch reads the file; root,
    who can set the clock, can get a rewrite past it);
  - delete_module: the name and flags;
  - for all: pid, tid, ppid, uid, gid, loginuid, comm, exe, cmdline, cgroup,
    container id, namespaces and effective capabilities.

What the sensor could not deliver is reported in the stream too: a
sensor_loss line (and record) says how many module syscalls the full ring
buffer dropped, and how many calls of unprivileged callers were over
--unprivileged-rate, since the previous one (checked once a second and at
exit).

-o json prints one JSON object a line (JSON lines), -o yaml one YAML
document an event, each opened by "---".

First, once the sensor is attached, it prints the modules already loaded
as "present" events: each tied to its module file by build ID (or
srcversion) where it can be, with the kernel's taint letters, and judged
like a load (--inventory=false leaves them out).

The kernel's own records come too where the kernel has module support:
module_load (a module formed, with the kernel's sig_ok verdict and its
taints) and module_free. Every --scan-every (default 1m; 0 turns it off)
it runs the check of 'kmodguard scan' and prints a "hidden" line, once, for
each live module that the kernel's structures show and /proc/modules does
not list.

With --allowlist each load is matched against the list ("allowed" in the
output); send SIGHUP to reload the file. With --record the events are also
saved to a record file that the Falco plugin replays (open params
"replay:FILE").

Watch needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF
(/sys/kernel/btf/vmlinux), the BPF ring buffer and bpf_loop (5.17 or later).
It stops on Ctrl-C, SIGTERM, --count or --duration, and prints the sensor's
counters to stderr: events, drops (syscalls lost when the ring buffer was
full) and the rest.`,
		Example: `  # live, human-readable
  sudo kmodguard watch

  # JSON lines (keys are those of the Falco plugin's kmod.* fields), checked
  # against an allowlist, and recorded for replay through Falco
  sudo kmodguard watch -o json --allowlist /etc/kmodguard/allowlist.yaml \
      --record /var/log/kmodguard/events.kgrec | jq 'select(.allowed == false)'

  # the next module syscall, then exit
  sudo kmodguard watch --count 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			o.format = out.format
			return runWatch(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	out = addOutput(cmd)
	out.addJSONAlias(cmd)
	f.StringVarP(&o.allowlist, "allowlist", "a", "", "match loads against this allowlist (SIGHUP reloads it)")
	completeFiles(cmd, "allowlist", "yaml", "yml")
	f.StringVar(&o.pubkey, "pubkey", "", "require the allowlist's FILE.sig to verify with this ed25519 public key")
	completeFiles(cmd, "pubkey", "pub", "pem")
	f.StringVar(&o.record, "record", "", "also append the events to this record file")
	completeFiles(cmd, "record", "kgrec")
	f.IntVar(&o.count, "count", 0, "exit after this many events, module syscalls and hidden modules (0: no limit; present and sensor_loss events do not count)")
	f.BoolVar(&o.inventory, "inventory", true, "first print the modules already loaded as present events, tied to their files and judged like loads")
	f.DurationVar(&o.duration, "duration", 0, "exit after this long (0: no limit)")
	f.IntVar(&o.ringSize, "ring-buffer-size", bpf.DefaultRingBufferSize, "ring buffer size in bytes (a power of two)")
	f.Uint64Var(&o.imageCap, "image-cap", bpf.DefaultImageCap, "bytes of an init_module image to capture")
	f.StringVar(&o.hook, "hook", "", `"tp_btf" or "raw_tracepoint" (sys_enter/sys_exit), or "fentry" on the syscall functions where the kernel allows it (default: tp_btf, else raw_tracepoint)`)
	completeValues(cmd, "hook", string(bpf.HookBTF), string(bpf.HookRaw), string(bpf.HookFentry))
	f.DurationVar(&o.statsEvery, "stats-every", 0, "also print the counters to stderr at this interval")
	f.DurationVar(&o.scanEvery, "scan-every", time.Minute, "look for hidden modules (as kmodguard scan does) at this interval, and print each one found as a hidden event (0: never)")
	f.IntVar(&o.unprivRate, "unprivileged-rate", bpf.DefaultUnprivilegedRate, "events per second and CPU from callers without CAP_SYS_MODULE, the rest counted as throttled (0: no limit)")
	return cmd
}

func runWatch(ctx context.Context, stdout, stderr io.Writer, o watchOptions) error {
	log := newLog(stderr)

	var list *allowlist.Source
	if o.allowlist != "" {
		var err error
		trust := trustFlags{pubkey: o.pubkey}
		if list, err = trust.source(o.allowlist); err != nil {
			return err
		}
	}

	var rec *event.RecordWriter
	var recFile *os.File
	if o.record != "" {
		f, err := os.OpenFile(o.record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return withCode(exitError, fmt.Errorf("open record file: %w", err))
		}
		recFile = f
		defer recFile.Close()
		st, err := f.Stat()
		if err != nil {
			return withCode(exitError, fmt.Errorf("record file: %w", err))
		}
		rec = event.NewRecordWriter(f)
		if st.Size() == 0 {
			if err := rec.WriteHeader(); err != nil {
				return withCode(exitError, err)
			}
		} else if err := checkRecordHeader(o.record); err != nil {
			return withCode(exitError, err)
		}
	}

	if o.unprivRate <= 0 {
		o.unprivRate = -1 // no limit, in the sensor's terms
	}
	cfg := bpf.Config{
		RingBufferSize:   o.ringSize,
		ImageCap:         o.imageCap,
		Hook:             bpf.Hook(o.hook),
		UnprivilegedRate: o.unprivRate,
		Logger:           log,
	}
	if list != nil {
		cfg.Allowlist = list.Current
	}
	s, err := bpf.NewSensor(cfg)
	if err != nil {
		return withCode(exitError, fmt.Errorf("watch: %w", err))
	}
	defer s.Close()

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if err := s.Start(ctx); err != nil {
		return withCode(exitError, fmt.Errorf("watch: %w", err))
	}
	log.WithFields(logrus.Fields{"hook": s.Hook(), "results": s.ExitSide()}).Info("watching init_module, finit_module and delete_module")

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if o.statsEvery > 0 {
		t := time.NewTicker(o.statsEvery)
		defer t.Stop()
		tick = t.C
	}

	out := bufio.NewWriter(stdout)
	emit := func(ev *event.Event) error {
		var err error
		if o.format == formatJSON || o.format == formatYAML {
			err = encodeItem(out, o.format, ev)
		} else {
			_, err = fmt.Fprintln(out, formatEvent(ev))
		}
		if err == nil {
			err = out.Flush()
		}
		if err == nil && rec != nil {
			err = rec.Write(ev)
		}
		return err
	}
	// The modules loaded before the sensor, taken once it is attached.
	if o.inventory {
		inv, err := inventory.Take(inventory.HostRoot())
		if err != nil {
			log.WithError(err).Warn("no inventory of the modules already loaded")
		}
		for i := range inv {
			if list != nil {
				list.Current().Judge(&inv[i])
			}
			if err := emit(&inv[i]); err != nil {
				return withCode(exitError, err)
			}
		}
	}
	// Hidden modules, looked for now and then (kmodguard scan's check);
	// a kernel without module support has none to hide.
	var hidden <-chan *event.Event
	if _, err := os.Stat("/proc/modules"); o.scanEvery > 0 && err == nil {
		hidden = scan.Monitor(ctx, scan.Options{}, o.scanEvery, func(err error) {
			log.WithError(err).Warn("hidden module scan")
		})
	}
	// What the sensor lost is an event too (sensor_loss), checked once a
	// second and at exit, so that a recording says where it is blind.
	var loss bpf.LossMeter
	lossTick := time.NewTicker(lossEvery)
	defer lossTick.Stop()
	n := 0
	var werr error
loop:
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				break loop
			}
			if werr = emit(ev); werr != nil {
				break loop
			}
			if n++; o.count > 0 && n >= o.count {
				break loop
			}
		case ev, ok := <-hidden:
			if !ok {
				hidden = nil
				continue
			}
			if werr = emit(ev); werr != nil {
				break loop
			}
			// A hidden module is a finding like a load: it counts.
			if n++; o.count > 0 && n >= o.count {
				break loop
			}
		case <-lossTick.C:
			if ev := loss.Observe(s.Stats(), time.Now()); ev != nil {
				if werr = emit(ev); werr != nil {
					break loop
				}
			}
		case <-hup:
			if list == nil {
				continue
			}
			if _, err := list.Reload(); err != nil {
				log.WithError(err).Error("allowlist not reloaded; keeping the previous one")
			} else {
				log.WithField("allowlist", o.allowlist).Info("allowlist reloaded")
			}
		case <-tick:
			printStats(stderr, s.Stats())
		}
	}
	s.Close()
	if ev := loss.Observe(s.Stats(), time.Now()); ev != nil && werr == nil {
		werr = emit(ev)
	}
	if recFile != nil {
		if err := recFile.Sync(); err != nil && werr == nil {
			werr = fmt.Errorf("record file: %w", err)
		}
	}
	printStats(stderr, s.Stats())
	if werr != nil && !errors.Is(werr, syscall.EPIPE) {
		return withCode(exitError, fmt.Errorf("watch: write: %w", werr))
	}
	return nil
}

// lossEvery is how often watch reads the sensor's loss counters.
const lossEvery = time.Second

// checkRecordHeader refuses to append to a file that is not a record file.
func checkRecordHeader(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("record file: %w", err)
	}
	defer f.Close()
	if _, err := event.NewRecordReader(f).Read(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("record file %s exists and is not a kmodguard record file: %w", path, err)
	}
	return nil
}

func printStats(w io.Writer, st bpf.Stats) {
	fmt.Fprintf(w, "kmodguard watch: %d events, %d delivered, %d dropped (ring buffer full), %d image chunks dropped, %d results lost, %d truncated, %d read failures, %d unprivileged calls throttled, %d junk init_module calls coalesced, %d orphan records, %d malformed, %d discarded at exit\n",
		st.Events, st.Delivered, st.Drops, st.ChunkDrops, st.ExitDrops, st.Truncations, st.ReadFailures, st.Throttled, st.Coalesced, st.Orphans, st.Malformed, st.Discarded)
}

// formatEvent is the one-line human form of an event.
func formatEvent(ev *event.Event) string {
	var b strings.Builder
	ts := time.Unix(0, int64(ev.TS)).UTC().Format("2006-01-02T15:04:05.000Z")
	name := ev.Name
	if name == "" {
		name = "?"
	}
	if ev.Syscall == event.SensorLoss {
		fmt.Fprintf(&b, "%s %-13s %d module syscall events lost (ring buffer full), %d unprivileged calls throttled", ts, ev.Syscall, ev.Lost, ev.Throttled)
		return b.String()
	}
	if ev.Syscall == event.Present {
		fmt.Fprintf(&b, "%s %-13s %-16s", ts, ev.Syscall, name)
		if ev.Allowed != nil {
			b.WriteString(map[bool]string{true: " ALLOWED", false: " NOT-ALLOWED"}[*ev.Allowed])
		}
		fmt.Fprintf(&b, " taint=%q %s", ev.Taint, ev.Inventory)
		if ev.Path != "" {
			fmt.Fprintf(&b, " path=%s sha256=%s", ev.Path, ev.SHA256)
		}
		return b.String()
	}
	switch ev.Syscall {
	case event.ModuleLoad, event.ModuleFree:
		// The kernel's own record: no result, no image, its verdicts.
		fmt.Fprintf(&b, "%s %-13s %-16s module=%#x taint=%q", ts, ev.Syscall, name, ev.ModuleAddr, ev.Taint)
		if ev.SigOK != nil {
			fmt.Fprintf(&b, " sig_ok=%t", *ev.SigOK)
		}
		fmt.Fprintf(&b, " pid=%d tid=%d comm=%q", ev.Pid, ev.Tid, ev.Comm)
		return b.String()
	case event.Hidden:
		fmt.Fprintf(&b, "%s %-13s %-16s HIDDEN module=%#x %s", ts, ev.Syscall, name, ev.ModuleAddr, ev.Hidden)
		return b.String()
	}
	res := formatRes(ev.Res)
	if ev.Syscall == event.ModuleRequest {
		res = "request" // no result: the kernel's modprobe runs after it
	}
	fmt.Fprintf(&b, "%s %-13s %-16s %-16s", ts, ev.Syscall, name, res)
	if ev.Allowed != nil {
		if *ev.Allowed {
			b.WriteString(" ALLOWED")
		} else {
			b.WriteString(" NOT-ALLOWED")
		}
	}
	for _, f := range []struct {
		on   bool
		what string
	}{
		{ev.NameMismatch, " NAME-MISMATCH(this_module=" + ev.ThisModuleName + ")"},
		{ev.FileChanged, " FILE-CHANGED"},
		{ev.Truncated, " TRUNCATED"},
		{ev.Unreadable, " UNREADABLE"},
		{ev.ImageAtExit, " IMAGE-AT-EXIT"},
		{ev.ParamsAtExit, " PARAMS-AT-EXIT"},
	} {
		if f.on {
			b.WriteString(f.what)
		}
	}
	fmt.Fprintf(&b, " pid=%d tid=%d ppid=%d uid=%d comm=%q", ev.Pid, ev.Tid, ev.Ppid, ev.UID, ev.Comm)
	if ev.Exe != "" {
		fmt.Fprintf(&b, " exe=%s", ev.Exe)
	}
	switch ev.Syscall {
	case event.InitModule:
		fmt.Fprintf(&b, " size=%d", ev.Size)
		if ev.Coalesced > 0 {
			fmt.Fprintf(&b, " coalesced=%d", ev.Coalesced)
		}
	case event.FinitModule:
		fmt.Fprintf(&b, " fd=%d path=%s", ev.FD, ev.Path)
	}
	if ev.RequestName != "" {
		fmt.Fprintf(&b, " autoload=%s requested_by=%q(pid %d)", ev.RequestName, ev.RequestComm, ev.RequestPid)
	}
	if len(ev.Flags) > 0 {
		fmt.Fprintf(&b, " flags=%s", strings.Join(ev.Flags, "|"))
	}
	if ev.Params != "" {
		fmt.Fprintf(&b, " params=%q", ev.Params)
	}
	if ev.SHA256 != "" {
		fmt.Fprintf(&b, " sha256=%s", ev.SHA256)
	}
	if ev.ContainerID != "" {
		fmt.Fprintf(&b, " container=%.12s", ev.ContainerID)
	} else if !ev.HostNS {
		fmt.Fprintf(&b, " pidns=%d userns=%d mntns=%d", ev.PidNS, ev.UserNS, ev.MntNS)
	}
	return b.String()
}

func formatRes(res int64) string {
	switch {
	case res == bpf.ResUnknown:
		return "res=?"
	case res == 0:
		return "res=0"
	case res < 0 && res > -4096:
		return fmt.Sprintf("res=%d(%s)", res, unix.ErrnoName(unix.Errno(-res)))
	}
	return fmt.Sprintf("res=%d", res)
}
