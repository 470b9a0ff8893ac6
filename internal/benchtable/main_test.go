package main

import (
	"strings"
	"testing"
)

// sample is what scripts/bench.sh collects: host lines as go test prints
// them, and guest lines as vmtest.LogLines prints them (indented, after
// the kernel's release).
const sample = `goos: linux
BenchmarkGetppidInterleaved-2   	      20	  51234567 ns/op	       188.0 none-ns/call	       231.0 sensor-ns/call	         1.23 sensor/empty	         1.01 sensor/empty_pair	         2.00 sensor/none
BenchmarkInspectTree/6.12-2         	       2	4281465412 ns/op	   4.93 MB/s	         1.019 inspect/xz-dc	         0.8414 inspect/xz-dc-2cpu	         0.7999 inspect/xz-dc-cpu	      1138 modules
BenchmarkInitModuleEvents-2   	  100000	      7771 ns/op	 128562 events/s	     22369 drops
   6.1.0-57-amd64: BenchmarkGuestModuleLoad/dummy-2 100 812345 ns/op 1.04 ratio 1.01 hook-ratio 1.03 cpu-ratio
   6.12.118+deb12-cloud-amd64: BenchmarkGuestModuleLoad/dummy-2 100 812345 ns/op 1.12 ratio 1.12 cpu-ratio
   7.2.13+deb14-cloud-amd64: BenchmarkGuestModuleLoad/veth 100 96784 bytes 1.127 hook-ratio 3589522 ns/guard-hook 32315985 ns/load-with 28293883 ns/load-without 1.142 ratio 1.131 cpu-ratio
   6.12.118+deb12-cloud-amd64: BenchmarkGetppidInterleaved-2 10 1 ns/op 0.94 sensor_fentry/none
--- FAIL: BenchmarkMatch
ok  	github.com/kmodguard/kmodguard/bpf	12.3s
`

func TestParse(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]map[string]float64{
		"BenchmarkGetppidInterleaved":                            {"sensor/empty": 1.23, "sensor/empty_pair": 1.01, "none-ns/call": 188},
		"BenchmarkInspectTree/6.12":                              {"inspect/xz-dc-cpu": 0.7999, "modules": 1138},
		"BenchmarkInitModuleEvents":                              {"drops": 22369, "events/s": 128562},
		"6.1.0-57-amd64 BenchmarkGuestModuleLoad/dummy":          {"ratio": 1.04, "hook-ratio": 1.01, "cpu-ratio": 1.03},
		"6.12.118+deb12-cloud-amd64 BenchmarkGetppidInterleaved": {"sensor_fentry/none": 0.94},
	} {
		for unit, v := range want {
			if got, ok := r[key][unit]; !ok || got != v {
				t.Errorf("%s %s = %v (%v), want %v", key, unit, got, ok, v)
			}
		}
	}
	if len(r) != 7 {
		t.Errorf("%d results, want 7: %v", len(r), r)
	}
}

func TestWrite(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	unmet := write(&b, r, goals)
	out := b.String()
	for _, want := range []string{
		"an empty sys_enter+sys_exit pair | host | 1.01 | ≤ 1.05 | yes |",
		"vs an empty sys_enter | host | 1.23 | reported | yes |",
		"| getppid() under the sensor with fexit as its exit side, vs no program | 6.12.118+deb12-cloud-amd64 | 0.94 | ≤ 1.05 | yes |",
		"| guard: dummy load+unload latency, with / without (guest) | 6.1.0-57-amd64 | 1.04 | ≤ 1.1 | yes |",
		"| guard: dummy load+unload latency, with / without (guest) | 6.12.118+deb12-cloud-amd64 | 1.12 | ≤ 1.1 | **no** |",
		"| guard: veth load+unload latency, with / without (guest) | 7.2.13+deb14-cloud-amd64 | 1.142 | ≤ 1.1 | **no** |",
		// Reported beside it, not held to a goal.
		"| guard: veth load+unload, the loading thread's CPU time, with / without (guest) | 7.2.13+deb14-cloud-amd64 | 1.131 | reported | yes |",
		"dropped per 100,000 calls | host | 22,369 | = 0 | **no** |",
		"| init_module events (4 KiB), flat out from one thread | host | 128,562 events/s | reported | yes |",
		"| highest paced init_module rate with no drop | – | not run | ≥ 200,000 events/s | no |",
		// Scaled: ns to ms.
		"run time per load (guest, emulated CPU) | 7.2.13+deb14-cloud-amd64 | 3.59 ms | reported | yes |",
		"over that load (guest) | 7.2.13+deb14-cloud-amd64 | 1.127 | reported | yes |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// The getppid goal on the host must not take the guest's line, nor the
	// other way round.
	if strings.Contains(out, "vs no program | host") {
		t.Errorf("the fentry row took the host's line:\n%s", out)
	}
	// Not met: dummy on 6.12, veth on 7.2, drops, and every goal without
	// a line.
	missing := strings.Count(out, "| not run |")
	if want := 3 + missing; unmet != want {
		t.Errorf("unmet = %d, want %d (3 off goal, %d not run)", unmet, want, missing)
	}
}
