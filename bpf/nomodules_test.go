package bpf

import (
	"os"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// TestNoModuleSupportSaidCalmly runs where the kernel is built without
// module support (no /proc/modules): the module tracepoints do not exist,
// so the sensor goes on without autoload and module events, says so at
// info level naming the cause, and still reports the module syscalls.
func TestNoModuleSupportSaidCalmly(t *testing.T) {
	if _, err := os.Stat("/proc/modules"); err == nil {
		t.Skip("needs a kernel built without module support (this one has /proc/modules); the guests test the module events")
	}
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	s := startTestSensor(t, Config{Logger: log})
	for name, side := range map[string]func() (Hook, error){"autoload": s.Autoload, "module events": s.ModuleEvents} {
		if h, err := side(); h != "" || err == nil {
			t.Errorf("%s: hook %q, error %v; want none, and why", name, h, err)
		}
	}
	said := 0
	for _, e := range hook.AllEntries() {
		if !strings.Contains(e.Message, "module_") {
			continue
		}
		if e.Level < logrus.InfoLevel {
			t.Errorf("logged at %s, want info (nothing can load here): %s", e.Level, e.Message)
		}
		if strings.Contains(e.Message, "built without module support") {
			said++
		}
	}
	if said != 2 {
		t.Errorf("%d messages name the missing module support, want 2 (autoload, module events); log: %v", said, messages(hook))
	}
}

func messages(h *logtest.Hook) []string {
	var out []string
	for _, e := range h.AllEntries() {
		out = append(out, e.Level.String()+": "+e.Message)
	}
	return out
}
