package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/internal/preflight"
)

func init() { register(newProbeCmd) }

// Exit codes of probe, beyond 0: a fleet acts on them.
const (
	exitProbeNoGuard  = 3 // detection works, the guard cannot run
	exitProbeNoSensor = 4 // not even detection works
)

func newProbeCmd() *cobra.Command {
	var o *output
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Say what of kmodguard will work on this host, and why not",
		Long: `Probe this host before deploying: privileges, kernel BTF, the kernel floor
(Linux 5.17: the BPF ring buffer and bpf_loop), lockdown, the sensor in each
of its modes (tp_btf, raw_tracepoint, and fentry, which needs BPF
trampolines: ftrace direct calls), BPF LSM for the guard (bpf in lsm=), module
support and the kernel's own signature enforcement.

The answers come from the kernel: the sensor's real programs are loaded
through the verifier (and fentry attached once), then closed. Nothing is
left loaded or pinned. Run it as root, as the sensor and the guard run.

Exit codes:
  0  detection and enforcement both work here
  3  detection works; the guard cannot run (see the failed checks)
  4  detection does not work either
  2  the probe itself failed`,
		Example: `  sudo kmodguard probe
  sudo kmodguard probe -o json | jq '.checks[] | select(.status == "fail")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runProbe(cmd.OutOrStdout(), preflight.Run(), o.format)
		},
	}
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	return cmd
}

func runProbe(w io.Writer, r *preflight.Report, format outputFormat) error {
	if format != formatText {
		if err := encode(w, format, r); err != nil {
			return err
		}
	} else if err := printProbe(w, r); err != nil {
		return withCode(exitError, err)
	}
	switch {
	case !r.Detection:
		return withCode(exitProbeNoSensor, errors.New("probe: the sensor cannot run on this host"))
	case !r.Enforcement:
		return withCode(exitProbeNoGuard, errors.New("probe: the guard cannot run on this host (detection can)"))
	}
	return nil
}

func printProbe(w io.Writer, r *preflight.Report) error {
	fmt.Fprintf(w, "kernel %s (%s)\n\n", r.Kernel, r.Arch)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range r.Checks {
		detail := c.Detail
		if len(c.Needed) > 0 && c.Status == preflight.Fail {
			detail += " [rules out: " + strings.Join(c.Needed, ", ") + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, strings.ToUpper(string(c.Status)), detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	hook := r.SensorHook
	if r.SensorResults != "" {
		hook += ", results from " + r.SensorResults
	}
	if r.Fentry {
		hook += ", fentry with --hook fentry"
	}
	if hook != "" {
		hook = " (" + hook + ")"
	}
	_, err := fmt.Fprintf(w, "\ndetection (watch, Falco plugin): %s%s\nenforcement (the guard):         %s\n",
		yes(r.Detection), hook, yes(r.Enforcement))
	return err
}
