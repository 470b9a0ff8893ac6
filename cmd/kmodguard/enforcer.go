//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/version"
)

func init() { register(newEnforcerCmd) }

func newEnforcerCmd() *cobra.Command {
	var pinDir string
	cmd := &cobra.Command{
		Use:   "enforcer",
		Short: "Run the BPF LSM guard that refuses modules not on the allowlist",
		Long: `The enforcer loads a BPF LSM guard into the kernel. The guard decides every
module load (init_module and finit_module, so insmod and modprobe too) on the
kernel's own copy of the image: it hashes it (SHA-256), reads both of its
names from the ELF, and refuses with EPERM any module the allowlist does not
admit. In audit mode it lets them load and reports them.

The guard is pinned under --pin-dir and stays in force when the daemon exits
or is killed; a restarted daemon adopts it. With --seal it also refuses, until
reboot, every way root has to remove it: unpinning, detaching, writing its
maps, unmounting its bpffs, loading fmod_ret programs, and kexec. A sealed
guard's allowlist is frozen: 'apply' and 'stop' are refused.

The kernel must run BPF LSM: 'bpf' must be in /sys/kernel/security/lsm
(add lsm=...,bpf to the kernel command line).`,
		Example: `  # enforce the allowlist, reloading it on SIGHUP and when the file changes
  kmodguard enforcer run --allowlist /etc/kmodguard/allowlist.yaml

  # try a new list without blocking anything, then look at what it would do
  kmodguard enforcer run --allowlist new.yaml --mode audit
  kmodguard enforcer status

  # replace the policy of a running guard, and remove the guard
  kmodguard enforcer apply /etc/kmodguard/allowlist.yaml
  kmodguard enforcer stop`,
	}
	cmd.PersistentFlags().StringVar(&pinDir, "pin-dir", enforcer.DefaultPinDir, "bpffs directory holding the guard's pins")
	_ = cmd.MarkPersistentFlagDirname("pin-dir")
	cmd.AddCommand(newEnforcerRunCmd(&pinDir), newEnforcerStatusCmd(&pinDir), newEnforcerApplyCmd(&pinDir), newEnforcerStopCmd(&pinDir),
		newEnforcerSealCmd(&pinDir))
	cmd.AddCommand(newEnforcerServeCompanionCmd(&pinDir)) // hidden: companion.go
	return cmd
}

func newEnforcerRunCmd(pinDir *string) *cobra.Command {
	var (
		path       string
		mode       string
		seal       bool
		logFormat  string
		poll       time.Duration
		trust      trustFlags
		metrics    string
		socket     string
		failClosed bool
	)
	cmd := &cobra.Command{
		Use:   "run --allowlist FILE",
		Short: "Load (or adopt) the guard, apply the allowlist, and log every decision",
		Long: `run loads the guard with the allowlist, or adopts the guard already pinned and
applies the allowlist to it, then logs every decision to stderr until it is
stopped. Killing it does not remove the guard.

It reloads the allowlist on SIGHUP and when the file (or FILE.sig) changes.
A file that does not parse, does not validate, or (with --pubkey) is not
signed by the key never replaces the allowlist in force: the error is
logged and the old list keeps working.

At start it warns about each loaded module that the allowlist does not name.

When the allowlist cannot be put in force at start (missing, unparsable,
badly signed, expired, older than the one applied), run exits 2 with the
reason. By default nothing else happens: a guard already pinned keeps its
policy, and with none pinned the host is unguarded (fail open: a broken
list does not hold the boot hostage). With --fail-closed it first pins a
guard with an empty policy in enforce mode when none is pinned: every
module load is refused until a valid list is applied (the next start of
run, or 'enforcer apply'). It is never sealed.

Under systemd, run it as Type=notify (deploy/systemd): it sends READY=1 only
once every hook is attached and the policy is in force, so units ordered
after it (systemd-modules-load, udev) load nothing before the guard decides.
"enforcer status" finds the guard pinned from that same moment on.`,
		Example: `  kmodguard enforcer run --allowlist /etc/kmodguard/allowlist.yaml
  kmodguard enforcer run --allowlist allow.yaml --pubkey signing.pub --seal
  kmodguard enforcer run --allowlist allow.yaml --mode audit --log-format json
  kmodguard enforcer run --allowlist allow.yaml --fail-closed   # refuse every module if allow.yaml is broken
  kmodguard enforcer run --allowlist allow.yaml --metrics-addr 127.0.0.1:9464   # Prometheus on /metrics
  kmodguard enforcer run --allowlist allow.yaml --companion-socket /run/kmodguard/companion.sock  # for Falco`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat)
			if err != nil {
				return withCode(exitError, err)
			}
			return runEnforcer(cmd.Context(), log, enforcerRun{
				path: path, mode: allowlist.Mode(mode), seal: seal, pinDir: *pinDir, poll: poll, trust: trust,
				metricsAddr: metrics, companionSocket: socket, failClosedOn: failClosed,
			})
		},
	}
	cmd.Flags().StringVarP(&path, "allowlist", "a", defaultAllowlist, "allowlist file")
	cmd.Flags().StringVar(&mode, "mode", "", "enforce or audit (default: the allowlist's spec.mode)")
	completeModes(cmd)
	cmd.Flags().BoolVar(&seal, "seal", false, "seal the guard until reboot (see 'kmodguard enforcer --help')")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "text or json (the level: --log-level)")
	completeValues(cmd, "log-format", "text", "json")
	cmd.Flags().DurationVar(&poll, "poll", time.Second, "how often to look for changes to the allowlist file")
	cmd.Flags().StringVar(&metrics, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics (off when empty)")
	cmd.Flags().BoolVar(&failClosed, "fail-closed", false, "when the allowlist cannot be put in force and no guard is pinned, pin a deny-all guard (every module refused) before exiting with the error")
	cmd.Flags().StringVar(&socket, "companion-socket", "", "serve decisions to the Falco plugin on this Unix socket (its init_config enforcer.socket)")
	trust.bind(cmd)
	return cmd
}

// newLogger is the daemon's logger: logrus, to w, at --log-level.
func newLogger(w io.Writer, format string) (*logrus.Logger, error) {
	log := newLog(w)
	switch format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("log format %q is neither text nor json", format)
	}
	return log, nil
}

type enforcerRun struct {
	path   string
	mode   allowlist.Mode
	seal   bool
	pinDir string
	poll   time.Duration
	trust  trustFlags
	// metricsAddr serves Prometheus metrics when set (enforcer/metrics.go).
	metricsAddr string
	// companionSocket serves decisions to the plugin when set.
	companionSocket string
	// failClosedOn pins a deny-all guard when the allowlist cannot be
	// put in force and no guard is pinned (--fail-closed).
	failClosedOn bool
}

func runEnforcer(ctx context.Context, log *logrus.Logger, r enforcerRun) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg := enforcer.Config{PinDir: r.pinDir, Mode: r.mode, Seal: r.seal, Logger: log}
	src, err := r.trust.source(r.path)
	if err != nil {
		return withCode(exitError, r.failClosed(log, cfg, fmt.Errorf("guard not loaded: %w", err)))
	}
	d, err := enforcer.NewDaemon(enforcer.DaemonConfig{
		Config: cfg, Allowlist: src, Poll: r.poll,
		MetricsAddr: r.metricsAddr, CompanionSocket: r.companionSocket,
	})
	if err != nil {
		return withCode(exitError, r.failClosed(log, cfg, err))
	}
	defer d.Close()
	return withCode(exitError, d.Run(ctx))
}

// failClosed is the daemon's way out when its allowlist cannot be put in
// force: with --fail-closed it first makes sure a guard refuses modules
// (enforcer.FailClosed). It returns the error to exit with: the start
// failed either way, and systemd shows it.
func (r enforcerRun) failClosed(log logrus.FieldLogger, cfg enforcer.Config, cause error) error {
	if !r.failClosedOn {
		return cause
	}
	denied, err := enforcer.FailClosed(cfg)
	switch {
	case err != nil:
		return fmt.Errorf("%w; and %w: modules are NOT refused", cause, err)
	case denied:
		log.WithError(cause).Error("fail-closed: a deny-all guard is pinned: every module load is refused until a valid allowlist is applied (fix the file, then restart the daemon)")
		return fmt.Errorf("%w (fail-closed: a deny-all guard refuses every module load)", cause)
	default:
		log.WithError(cause).Error("fail-closed: the guard already pinned keeps its policy")
		return fmt.Errorf("%w (fail-closed: the pinned guard keeps its policy)", cause)
	}
}

func newEnforcerStatusCmd(pinDir *string) *cobra.Command {
	var o *output
	var ready bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the pinned guard: mode, seal, policy generation, hooks, counters",
		Long: `status reads the pinned guard without changing it. It works on a sealed guard
and without the daemon. It exits 0 when the guard is pinned with every hook
attached, 1 when the guard is not whole, and 2 when no guard is pinned
(none loaded, or one still loading), or its pins cannot be read. With --ready,
exit 0 also needs the daemon: the decision reader recorded in the pins must
run in this PID namespace, have started before its last check, and have
checked within the last 10 seconds (it does every second while it reads);
else exit 1. The daemon applies its allowlist before it starts reading, so
--ready means the guard is whole, a policy is in force and a daemon serves
it, in audit mode as in enforce mode: the readiness probe of the enforcer's
container, run in that container. Not whole is:
  - a hook missing: someone removed a link of an unsealed guard; the next
    "enforcer run" attaches it again;
  - an override: someone else's BPF program that decides before the guard
    and can admit what it refuses: fmod_ret on a security_ function the
    guard hooks, or, on kernels before 6.12 (which let LSM programs return
    any value), an LSM program on kernel_read_file, kernel_post_read_file,
    bpf, bpf_map or bpf_prog. The seal refuses new ones; one attached
    before can only be detached (bpftool link detach id LINK).

"lost" decisions are those the kernel could not queue (the ring buffer was
full). The first line is the version of the kmodguard that read the pins (JSON
version and commit; see "kmodguard version"), the next the version of the
daemon that reads the guard's decisions, read from its executable while it
runs (JSON reader_version): after an upgrade, a daemon not yet restarted
is the older build.

"missing decisions" are those another process consumed from the ring
buffer before the daemon could read them, as the daemon last found them
(since it started; JSON missing_decisions): anything above 0 means someone
is hiding the guard's decisions from it.`,
		Example: `  kmodguard enforcer status
  kmodguard enforcer status -o json | jq .sealed
  kmodguard enforcer status --ready >/dev/null   # a readiness probe`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := enforcer.ReadStatus(*pinDir)
			if err != nil {
				return withCode(exitError, err)
			}
			var reader *version.Info
			if st.ReaderPid != 0 {
				// The daemon's own build, when it still runs: after an
				// upgrade, it can be older than this kmodguard.
				if v, err := version.OfExecutable(fmt.Sprintf("/proc/%d/exe", st.ReaderPid)); err == nil {
					reader = &v
				}
			}
			if err := printStatus(cmd.OutOrStdout(), st, version.Get(), reader, o.format); err != nil {
				return err
			}
			if err := incomplete(st); err != nil || !ready {
				return err
			}
			return withCode(exitDenied, notServed(st, time.Now(), processStart))
		},
	}
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	cmd.Flags().BoolVar(&ready, "ready", false, "exit 0 only when a running daemon also reads the guard's decisions (a readiness probe)")
	return cmd
}

// readerStale is how old the decision reader's last check may be for
// status --ready: it checks every second while it runs.
const readerStale = 10 * time.Second

// notServed is status --ready's question for a whole guard: does a running
// daemon read its decisions? The reader pins its pid and, every second, the
// time of its check. The pid must name a process here (start gives its
// start time) that started before that check, so that a pid reused by
// another process after the daemon's end is not taken for it (in a
// container, the daemon is pid 1 of every pod that ever ran it).
func notServed(st enforcer.Status, now time.Time, start func(pid uint32) (time.Time, error)) error {
	if st.ReaderPid == 0 || st.ReaderChecked.IsZero() {
		return errors.New("not ready: no daemon has read the guard's decisions since it was loaded")
	}
	started, err := start(st.ReaderPid)
	if err != nil {
		return fmt.Errorf("not ready: the daemon that read the guard's decisions (pid %d) is not running here: %w", st.ReaderPid, err)
	}
	// Process start times are in clock ticks (10 ms).
	if st.ReaderChecked.Before(started.Add(-10 * time.Millisecond)) {
		return fmt.Errorf("not ready: pid %d started at %s, after the decision reader's last check (%s): not the daemon",
			st.ReaderPid, started.Format(time.RFC3339), st.ReaderChecked.Format(time.RFC3339))
	}
	if age := now.Sub(st.ReaderChecked); age > readerStale {
		return fmt.Errorf("not ready: the daemon (pid %d) last checked the guard's decisions %s ago", st.ReaderPid, age.Round(time.Second))
	}
	return nil
}

// statusJSON is status's JSON (and YAML): the guard's state, the version of the
// kmodguard that read it, and the version of the decision reader (the
// daemon, reader_pid) when it runs.
type statusJSON struct {
	enforcer.Status
	Version       string `json:"version"`
	Commit        string `json:"commit,omitempty"`
	ReaderVersion string `json:"reader_version,omitempty"`
}

// printStatus writes st, read by the kmodguard build v, in format;
// reader is the build of the daemon that reads the decisions, nil when
// unknown.
func printStatus(out io.Writer, st enforcer.Status, v version.Info, reader *version.Info, format outputFormat) error {
	if format != formatText {
		j := statusJSON{Status: st, Version: v.Version, Commit: v.Commit}
		if reader != nil {
			j.ReaderVersion = reader.Version
		}
		return encode(out, format, j)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version:\t%s\n", v)
	if reader != nil {
		fmt.Fprintf(tw, "daemon version:\t%s (pid %d)\n", reader, st.ReaderPid)
	}
	fmt.Fprintf(tw, "pin dir:\t%s\n", st.PinDir)
	fmt.Fprintf(tw, "mode:\t%s\n", st.Mode)
	fmt.Fprintf(tw, "sealed:\t%v\n", st.Sealed)
	fmt.Fprintf(tw, "generation:\t%d\n", st.Generation)
	if st.Serial != 0 {
		fmt.Fprintf(tw, "serial:\t%d (older allowlists are refused)\n", st.Serial)
	}
	fmt.Fprintf(tw, "policy entries:\t%d\n", st.Entries)
	if len(st.Require) > 0 {
		fmt.Fprintf(tw, "requires:\t%s (checked on every load before the list)\n", strings.Join(st.Require, ", "))
	}
	if len(st.AutoloadDeny) > 0 {
		fmt.Fprintf(tw, "autoload deny:\t%d patterns: %s (kernel autoload requests refused)\n", len(st.AutoloadDeny), strings.Join(st.AutoloadDeny, " "))
	}
	fmt.Fprintf(tw, "decisions:\t%d allowed, %d blocked, %d audit, %d lost\n", st.Allowed, st.Blocked, st.Audited, st.LostEvents)
	if st.ReaderPid != 0 {
		fmt.Fprintf(tw, "missing decisions:\t%d (consumed by another process; as found by the reader, pid %d)\n", st.MissingDecisions, st.ReaderPid)
	}
	fmt.Fprintf(tw, "hooks:\t%d of %d attached\n", len(st.Links), len(enforcer.Hooks()))
	for _, l := range st.Links {
		fmt.Fprintf(tw, "  %s\tlink %d, prog %d\n", l.Hook, l.LinkID, l.ProgID)
	}
	for _, m := range st.Missing {
		fmt.Fprintf(tw, "  %s\tMISSING\n", m)
	}
	switch {
	case st.OverridesError != "":
		fmt.Fprintf(tw, "overrides:\tunknown (%s)\n", st.OverridesError)
	case len(st.Overrides) == 0:
		fmt.Fprintf(tw, "overrides:\tnone\n")
	default:
		fmt.Fprintf(tw, "overrides:\t%d program(s) decide before the guard: it can be bypassed\n", len(st.Overrides))
		for _, o := range st.Overrides {
			target := o.Target
			if target == "" {
				target = "(hook unknown under the seal)"
			}
			fmt.Fprintf(tw, "  %s\t%s prog %d (%s), link %d", target, o.Kind, o.ProgID, o.ProgName, o.LinkID)
			if o.Cgroup != "" {
				fmt.Fprintf(tw, ", cgroup %s", o.Cgroup)
			}
			fmt.Fprintln(tw)
		}
	}
	switch {
	case st.RecursionMissesError != "":
		fmt.Fprintf(tw, "recursion misses:\tunknown (%s)\n", st.RecursionMissesError)
	case st.RecursionMisses == 0:
		fmt.Fprintf(tw, "recursion misses:\tnone\n")
	default:
		fmt.Fprintf(tw, "recursion misses:\t%d call(s) to the guard skipped by the kernel (it was running on that CPU): undecided\n", st.RecursionMisses)
		for _, m := range st.RecursionMissesByHook {
			fmt.Fprintf(tw, "  %s\tprog %d, %d skipped\n", m.Hook, m.ProgID, m.Misses)
		}
	}
	exposure := "no"
	switch {
	case st.Preemption.Exposed():
		exposure = "YES: a load that preempts the guard on its CPU is admitted undecided"
	case st.Preemption.Switchable():
		exposure = "not now; root can switch the kernel to preempt=full"
	}
	fmt.Fprintf(tw, "preemption:\t%s; skippable: %s\n", st.Preemption, exposure)
	return tw.Flush()
}

// incomplete is status's exit 1: a pinned guard with hooks missing, with a
// program that decides before it, or with calls the kernel skipped
// (recursion misses).
func incomplete(st enforcer.Status) error {
	var why []string
	if len(st.Missing) > 0 {
		why = append(why, fmt.Sprintf("%d of %d hooks missing (%s)", len(st.Missing), len(enforcer.Hooks()), strings.Join(st.Missing, ", ")))
	}
	for _, o := range st.Overrides {
		why = append(why, fmt.Sprintf("overridden by %s", o))
	}
	for _, m := range st.RecursionMissesByHook {
		why = append(why, fmt.Sprintf("%s skipped %d time(s) by the kernel (recursion misses: those calls were not decided)", m.Hook, m.Misses))
	}
	if len(why) == 0 {
		return nil
	}
	return withCode(exitDenied, fmt.Errorf("the guard is not whole: %s", strings.Join(why, "; ")))
}

func newEnforcerApplyCmd(pinDir *string) *cobra.Command {
	var (
		mode  string
		trust trustFlags
	)
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Validate an allowlist and swap it into the pinned guard atomically",
		Long: `apply validates FILE first (syntax, fields, and with --pubkey its signature);
a file that fails leaves the policy in force untouched. It then swaps the
new policy in with one map update, so no load sees half of it.

A running daemon keeps its own file: it re-applies that file on SIGHUP or
when it changes. apply is refused when the guard is sealed.`,
		Example: `  kmodguard enforcer apply /etc/kmodguard/allowlist.yaml
  kmodguard enforcer apply --pubkey signing.pub --mode audit new.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := trust.load(args[0])
			if err != nil {
				return err
			}
			gen, err := enforcer.ApplyPinned(*pinDir, a, allowlist.Mode(mode))
			if err != nil {
				return withCode(exitError, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %s: generation %d\n", args[0], gen)
			return nil
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "enforce or audit (default: the allowlist's spec.mode)")
	completeModes(cmd)
	trust.bind(cmd)
	return cmd
}

func newEnforcerStopCmd(pinDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Remove the pinned guard (refused when sealed)",
		Long: `stop unpins the guard's links and maps; the kernel detaches the guard once no
process holds it (stop a running daemon first). A sealed guard refuses: only
a reboot removes it.`,
		Example: `  systemctl stop kmodguard-enforcer && kmodguard enforcer stop`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := enforcer.Stop(*pinDir); err != nil {
				if errors.Is(err, enforcer.ErrSealed) {
					return withCode(exitError, fmt.Errorf("%w: only a reboot removes it", err))
				}
				return withCode(exitError, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "guard removed")
			return nil
		},
	}
}
