package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// logLevels are the values of --log-level, most verbose first.
var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// logLevel is --log-level: one of logLevels, checked while the flags are
// parsed.
type logLevel string

func (l *logLevel) String() string { return string(*l) }
func (l *logLevel) Type() string   { return "level" }

func (l *logLevel) Set(s string) error {
	if !slices.Contains(logLevels, s) {
		return fmt.Errorf("want %s", strings.Join(logLevels, ", "))
	}
	*l = logLevel(s)
	return nil
}

// addLogLevel gives root the persistent --log-level. The level goes to
// logrus's standard logger, which the library packages fall back on, and
// newLog copies it into the loggers the commands make.
func addLogLevel(root *cobra.Command) {
	l := logLevel("info")
	root.PersistentFlags().Var(&l, "log-level", "log level: "+strings.Join(logLevels, ", "))
	completeValues(root, "log-level", logLevels...)
	root.PersistentPreRun = func(*cobra.Command, []string) {
		lvl, _ := logrus.ParseLevel(string(l))
		logrus.SetLevel(lvl)
	}
}

// newLog is a logger to w at --log-level.
func newLog(w io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(w)
	log.SetLevel(logrus.GetLevel())
	return log
}
