//go:build ignore

// falcohost is a minimal stand-in for Falco, for tests: it loads a source
// plugin through the plugin API's C symbols, initializes it, opens a
// capture, pulls every batch until EOF, and extracts the named fields of
// every event, printing one line per field:
//
//   EVTNUM TS FIELD=VALUE        (lists: values joined by '|'; no value: <NA>)
//
// then, once the capture is over, the plugin's metrics, as Falco's metrics
// thread reads them through the optional plugin_get_metrics:
//
//   metric NAME TYPE VALUE_TYPE VALUE   (TYPE: ss_plugin_metric_type number;
//                                        VALUE_TYPE: ss_plugin_metric_value_type)
//
// usage: falcohost PLUGIN.so INIT_CONFIG OPEN_PARAMS FIELD:TYPE:LIST...
//   the fields in the plugin's order (the position is the field id, as in
//   Falco); TYPE is the FTYPE_* number (8 uint64, 9 string, 25 bool), LIST 0
//   or 1.
//
// Built at test time against plugin-sdk-go's plugin_api.h.

#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_api.h"

typedef ss_plugin_t *(*init_fn)(const ss_plugin_init_input *, ss_plugin_rc *);
typedef void (*destroy_fn)(ss_plugin_t *);
typedef const char *(*last_error_fn)(ss_plugin_t *);
typedef ss_instance_t *(*open_fn)(ss_plugin_t *, const char *, ss_plugin_rc *);
typedef void (*close_fn)(ss_plugin_t *, ss_instance_t *);
typedef ss_plugin_rc (*next_batch_fn)(ss_plugin_t *, ss_instance_t *, uint32_t *, ss_plugin_event ***);
typedef ss_plugin_rc (*extract_fn)(ss_plugin_t *, const ss_plugin_event_input *,
				   const ss_plugin_field_extract_input *);
typedef ss_plugin_metric *(*get_metrics_fn)(ss_plugin_t *, uint32_t *);

static void *sym(void *lib, const char *name)
{
	void *p = dlsym(lib, name);
	if (!p) {
		fprintf(stderr, "falcohost: missing symbol %s\n", name);
		exit(2);
	}
	return p;
}

static void print_metrics(get_metrics_fn get_metrics, ss_plugin_t *s)
{
	if (!get_metrics) {
		printf("metric none\n");
		return;
	}
	uint32_t n = 0;
	ss_plugin_metric *m = get_metrics(s, &n);
	if (n > 0 && !m) {
		printf("metric error: %u metrics at NULL\n", n);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		printf("metric %s %d %d ", m[i].name, (int)m[i].type, (int)m[i].value_type);
		switch (m[i].value_type) {
		case SS_PLUGIN_METRIC_VALUE_TYPE_U64:
			printf("%" PRIu64, m[i].value.u64);
			break;
		case SS_PLUGIN_METRIC_VALUE_TYPE_U32:
			printf("%" PRIu32, m[i].value.u32);
			break;
		default:
			printf("<value type %d>", (int)m[i].value_type);
		}
		printf("\n");
	}
}

static void print_value(const ss_plugin_extract_field *f)
{
	if (f->res_len == 0) {
		printf("<NA>");
		return;
	}
	for (uint64_t i = 0; i < f->res_len; i++) {
		if (i > 0)
			printf("|");
		switch (f->ftype) {
		case FTYPE_UINT64:
			printf("%" PRIu64, f->res.u64[i]);
			break;
		case FTYPE_BOOL:
			printf("%s", f->res.boolean[i] ? "true" : "false");
			break;
		case FTYPE_STRING:
			printf("%s", f->res.str[i]);
			break;
		default:
			printf("<type %u>", f->ftype);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: falcohost PLUGIN.so INIT_CONFIG OPEN_PARAMS FIELD:TYPE:LIST...\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "falcohost: %s\n", dlerror());
		return 2;
	}
	init_fn init = (init_fn)sym(lib, "plugin_init");
	destroy_fn destroy = (destroy_fn)sym(lib, "plugin_destroy");
	last_error_fn last_error = (last_error_fn)sym(lib, "plugin_get_last_error");
	open_fn open = (open_fn)sym(lib, "plugin_open");
	close_fn close = (close_fn)sym(lib, "plugin_close");
	next_batch_fn next_batch = (next_batch_fn)sym(lib, "plugin_next_batch");
	extract_fn extract = (extract_fn)sym(lib, "plugin_extract_fields");
	// Optional in the API, as for Falco: resolved without sym's exit.
	get_metrics_fn get_metrics = (get_metrics_fn)dlsym(lib, "plugin_get_metrics");

	int nfields = argc - 4;
	ss_plugin_extract_field *fields = calloc(nfields > 0 ? nfields : 1, sizeof(*fields));
	for (int i = 0; i < nfields; i++) {
		char *spec = argv[4 + i];
		char *type = strchr(spec, ':');
		char *list = type ? strchr(type + 1, ':') : NULL;
		if (!type || !list) {
			fprintf(stderr, "falcohost: bad field spec %s\n", spec);
			return 2;
		}
		*type++ = '\0';
		*list++ = '\0';
		fields[i].field_id = i;
		fields[i].field = spec;
		fields[i].ftype = (uint32_t)atoi(type);
		fields[i].flist = atoi(list) != 0;
	}

	ss_plugin_init_input in = {0};
	in.config = argv[2];
	ss_plugin_rc rc = SS_PLUGIN_FAILURE;
	ss_plugin_t *s = init(&in, &rc);
	if (rc != SS_PLUGIN_SUCCESS) {
		printf("init error: %s\n", s ? last_error(s) : "(no state)");
		if (s)
			destroy(s);
		return 0;
	}
	ss_instance_t *h = open(s, argv[3], &rc);
	if (rc != SS_PLUGIN_SUCCESS) {
		printf("open error: %s\n", last_error(s));
		destroy(s);
		return 0;
	}

	uint64_t evtnum = 0;
	int timeouts = 0;
	for (;;) {
		uint32_t n = 0;
		ss_plugin_event **evts = NULL;
		rc = next_batch(s, h, &n, &evts);
		if (rc == SS_PLUGIN_EOF)
			break;
		if (rc == SS_PLUGIN_TIMEOUT) {
			if (++timeouts > 50)
				break;
			continue;
		}
		if (rc != SS_PLUGIN_SUCCESS) {
			printf("next_batch error: %s\n", last_error(s));
			break;
		}
		for (uint32_t i = 0; i < n; i++) {
			ss_plugin_event_input ev = {evts[i], ++evtnum, "kmodguard"};
			ss_plugin_field_extract_input req = {0};
			req.num_fields = (uint32_t)nfields;
			req.fields = fields;
			if (extract(s, &ev, &req) != SS_PLUGIN_SUCCESS) {
				printf("%" PRIu64 " extract error: %s\n", evtnum, last_error(s));
				continue;
			}
			for (int j = 0; j < nfields; j++) {
				printf("%" PRIu64 " %" PRIu64 " %s=", evtnum, evts[i]->ts, fields[j].field);
				print_value(&fields[j]);
				printf("\n");
			}
		}
	}
	print_metrics(get_metrics, s);
	close(s, h);
	destroy(s);
	return 0;
}
