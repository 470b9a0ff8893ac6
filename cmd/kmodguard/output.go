package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFormat is how a command prints its report: -o/--output.
type outputFormat string

const (
	formatText outputFormat = "text"
	formatJSON outputFormat = "json"
	formatYAML outputFormat = "yaml"
)

var outputFormats = []outputFormat{formatText, formatJSON, formatYAML}

func isOutputFormat(s string) bool { return slices.Contains(outputFormats, outputFormat(s)) }

// output is -o/--output as a pflag.Value, so that a bad format is refused
// while the flags are parsed, before the command does anything.
type output struct {
	format outputFormat
	set    bool // -o was given
	json   bool // the deprecated --json was given
}

func (o *output) String() string { return string(o.format) }
func (o *output) Type() string   { return "format" }

func (o *output) Set(s string) error {
	if !isOutputFormat(s) {
		return fmt.Errorf("want text, json or yaml")
	}
	if o.json && outputFormat(s) != formatJSON {
		return fmt.Errorf("--json (deprecated) means -o json: give -o alone")
	}
	o.format, o.set = outputFormat(s), true
	return nil
}

// addOutput gives cmd -o/--output text|json|yaml, default text.
func addOutput(cmd *cobra.Command) *output {
	o := &output{format: formatText}
	cmd.Flags().VarP(o, "output", "o", "output format: text, json or yaml")
	completeValues(cmd, "output",
		cobra.CompletionWithDesc(string(formatText), "for people"),
		cobra.CompletionWithDesc(string(formatJSON), "JSON, the keys of the plugin's fields"),
		cobra.CompletionWithDesc(string(formatYAML), "YAML, the same keys as JSON"))
	return o
}

// addJSONAlias keeps the --json of older releases working, as -o json.
func (o *output) addJSONAlias(cmd *cobra.Command) {
	f := cmd.Flags().VarPF(jsonAlias{o}, "json", "", "same as -o json")
	f.NoOptDefVal = "true"
	deprecate(cmd, "json", "use -o json")
}

type jsonAlias struct{ o *output }

func (j jsonAlias) String() string { return strconv.FormatBool(j.o.json) }
func (j jsonAlias) Type() string   { return "bool" }

func (j jsonAlias) Set(s string) error {
	on, err := strconv.ParseBool(s)
	if err != nil || !on {
		return err
	}
	if j.o.set && j.o.format != formatJSON {
		return fmt.Errorf("--json means -o json, and -o says %s: give -o alone", j.o.format)
	}
	j.o.json, j.o.format = true, formatJSON
	return nil
}

// encode writes a whole report as indented JSON or as YAML. YAML goes
// through JSON (sigs.k8s.io/yaml), so that both have the same keys.
func encode(w io.Writer, f outputFormat, v any) error {
	if f != formatYAML {
		return writeJSON(w, v)
	}
	b, err := yaml.Marshal(v)
	if err == nil {
		_, err = w.Write(b)
	}
	if err != nil {
		return withCode(exitError, fmt.Errorf("write yaml: %w", err))
	}
	return nil
}

// encodeItem writes one item of a stream: a line of JSON, or a YAML
// document opened by "---", so that a reader can take each as it comes.
func encodeItem(w io.Writer, f outputFormat, v any) error {
	if f != formatYAML {
		return json.NewEncoder(w).Encode(v)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "---\n"); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return withCode(exitError, fmt.Errorf("write json: %w", err))
	}
	return nil
}

// fileAlias is the old -o/--output of a command that writes a file, which
// another flag now names. -o names a report format everywhere else, so a
// format name given here is refused rather than written to.
type fileAlias struct {
	file    *string
	instead string
}

func (a fileAlias) String() string { return *a.file }
func (a fileAlias) Type() string   { return "string" }

func (a fileAlias) Set(s string) error {
	if isOutputFormat(s) {
		return fmt.Errorf("-o names a report format, and this command prints no report: give the file with %s", a.instead)
	}
	*a.file = s
	return nil
}

// addFileAlias keeps the old -o/--output of cmd as a deprecated spelling
// of the flag instead, which writes to file.
func addFileAlias(cmd *cobra.Command, file *string, instead string) {
	cmd.Flags().VarP(fileAlias{file, instead}, "output", "o", "same as "+instead)
	deprecate(cmd, "output", "use "+instead)
}

// deprecate hides a flag of cmd and warns on stderr when it is given.
// Not cobra's MarkDeprecated: cobra prints that notice on the command's
// output writer when one is set, which is stdout, in the middle of a
// report.
func deprecate(cmd *cobra.Command, name, instead string) {
	f := cmd.Flags().Lookup(name)
	f.Hidden = true
	spelling := "--" + f.Name
	if f.Shorthand != "" {
		spelling = "-" + f.Shorthand + "/" + spelling
	}
	f.Value = &deprecated{value: f.Value, warn: func() {
		fmt.Fprintf(cmd.ErrOrStderr(), "kmodguard: warning: %s is deprecated: %s\n", spelling, instead)
	}}
}

type deprecated struct {
	value // the flag's own
	warn  func()
}

// value is pflag.Value.
type value interface {
	String() string
	Set(string) error
	Type() string
}

func (d *deprecated) Set(s string) error {
	if err := d.value.Set(s); err != nil {
		return err
	}
	d.warn()
	return nil
}

// completeValues offers values for a flag of cmd, and no file names.
func completeValues(cmd *cobra.Command, flag string, values ...cobra.Completion) {
	if err := cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)); err != nil {
		panic(err) // a flag that does not exist: a mistake in this file's callers
	}
}

// completeFiles offers files ending in one of exts (no dot) for a flag.
func completeFiles(cmd *cobra.Command, flag string, exts ...string) {
	if err := cmd.MarkFlagFilename(flag, exts...); err != nil {
		panic(err)
	}
}

// completeAllowlists offers YAML files for a command's arguments.
func completeAllowlists(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return []cobra.Completion{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
}
