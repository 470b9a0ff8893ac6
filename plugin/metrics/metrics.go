// Package metrics exports plugin_get_metrics, the optional symbol of the
// Falco plugin API through which libs collects a plugin's metrics
// (plugin-sdk-go does not export it). cmd/plugin imports it for that side
// effect, so that libkmodguard.so carries the symbol.
//
// Falco calls plugin_get_metrics from its metrics thread and reports each
// metric as "kmodguard.<name>" (plugin.Metrics lists them). The array it
// returns, and the names in it, are C memory allocated once per plugin
// state, at the first call, and freed by plugin_destroy (plugin.Destroy);
// each call only writes the current values into it, so the pointer stays
// valid until the next call, as the API asks.
package metrics

/*
#include <stdint.h>
#include <stdlib.h>

// One metric as the plugin API (plugin_types.h, API 3.x) lays it out: its
// name, whether it only grows, its value, and the value's type. Both enums
// of the API are ints.
typedef union {
	uint32_t u32;
	int32_t s32;
	uint64_t u64;
	int64_t s64;
	double d;
	float f;
	int i;
} kg_metric_value;

typedef struct {
	const char *name;
	int type;
	kg_metric_value value;
	int value_type;
} kg_metric;

// The API's numbers for the metric types and the one value type used here.
enum {
	KG_METRIC_MONOTONIC = 0,
	KG_METRIC_NON_MONOTONIC = 1,
	KG_METRIC_VALUE_U64 = 2,
};
*/
import "C"

import (
	"sync"
	"unsafe"

	"github.com/falcosecurity/plugin-sdk-go/pkg/cgo"

	"github.com/kmodguard/kmodguard/plugin"
)

// state is what plugin_get_metrics needs from the plugin state.
type state interface {
	MetricValues(dst []uint64)
	MetricsTable(alloc func() plugin.MetricsTable) plugin.MetricsTable
}

// table is the C array of one plugin state.
type table struct {
	mu   sync.Mutex
	arr  *C.kg_metric // plugin.NumMetrics entries; nil once freed
	vals []uint64
}

func newTable() plugin.MetricsTable {
	descs := plugin.Metrics()
	arr := (*C.kg_metric)(C.calloc(C.size_t(len(descs)), C.size_t(unsafe.Sizeof(C.kg_metric{}))))
	if arr == nil {
		return &table{}
	}
	entries := unsafe.Slice(arr, len(descs))
	for i := range entries {
		e := &entries[i]
		e.name = C.CString(descs[i].Name)
		e._type = C.KG_METRIC_MONOTONIC
		if descs[i].Type == plugin.NonMonotonic {
			e._type = C.KG_METRIC_NON_MONOTONIC
		}
		e.value_type = C.KG_METRIC_VALUE_U64
	}
	return &table{arr: arr, vals: make([]uint64, len(descs))}
}

// fill writes the plugin's current values into the array and returns it,
// with its length in *n.
func (t *table) fill(s state, n *C.uint32_t) *C.kg_metric {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.arr == nil {
		*n = 0
		return nil
	}
	s.MetricValues(t.vals)
	entries := t.entries()
	for i := range entries {
		*(*uint64)(unsafe.Pointer(&entries[i].value)) = t.vals[i]
	}
	*n = C.uint32_t(len(t.vals))
	return t.arr
}

func (t *table) entries() []C.kg_metric { return unsafe.Slice(t.arr, len(t.vals)) }

// Free releases the array and the names.
func (t *table) Free() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.arr == nil {
		return
	}
	for _, e := range t.entries() {
		C.free(unsafe.Pointer(e.name))
	}
	C.free(unsafe.Pointer(t.arr))
	t.arr, t.vals = nil, nil
}

//export plugin_get_metrics
func plugin_get_metrics(pState C.uintptr_t, num *C.uint32_t) *C.kg_metric {
	*num = 0
	if pState == 0 {
		return nil
	}
	// A state whose init failed is the SDK's own, with no metrics.
	s, ok := cgo.Handle(pState).Value().(state)
	if !ok {
		return nil
	}
	t, ok := s.MetricsTable(newTable).(*table)
	if !ok {
		return nil
	}
	return t.fill(s, num)
}

// Metric is one entry of the C array, read back.
type Metric struct {
	Name      string
	Type      int // 0 monotonic, 1 non-monotonic
	ValueType int // 2: u64
	Value     uint64
}

// Get calls plugin_get_metrics on a plugin state handle as libs does and
// reads back the array: for tests.
func Get(h cgo.Handle) []Metric {
	var n C.uint32_t
	arr := plugin_get_metrics(C.uintptr_t(h), &n)
	if arr == nil {
		return nil
	}
	out := make([]Metric, 0, n)
	for _, e := range unsafe.Slice(arr, int(n)) {
		out = append(out, Metric{
			Name:      C.GoString(e.name),
			Type:      int(e._type),
			ValueType: int(e.value_type),
			Value:     *(*uint64)(unsafe.Pointer(&e.value)),
		})
	}
	return out
}
