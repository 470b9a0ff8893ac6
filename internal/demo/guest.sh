#!/bin/sh
# The guest half of `make demo`: runs as root in a Debian kernel under QEMU,
# with busybox, the kmodguard CLI on PATH and real modules in
# /vmtest/fixtures. Every step says what it does, runs the commands in the
# open ($ lines), and says what was seen.

F=/vmtest/fixtures
A=/tmp/allowlist.yaml
n=0
failures=0

# Colours only when the host prints to a terminal.
b='' g='' r='' o=''
if [ "${KMODGUARD_DEMO_COLOR:-}" = 1 ]; then
	b=$(printf '\033[1m') g=$(printf '\033[32m') r=$(printf '\033[31m') o=$(printf '\033[0m')
fi
step() { n=$((n + 1)); printf '\n%s== Step %d: %s%s\n' "$b" "$n" "$*" "$o"; }
say() { printf '   %s\n' "$*"; }
seen() { printf '   %s-> %s%s\n' "$g" "$*" "$o"; }
wrong() { printf '   %s-> UNEXPECTED: %s%s\n' "$r" "$*" "$o"; failures=$((failures + 1)); }

# run CMD...: show it, run it, indent its output, return its status.
run() {
	printf '   $ %s\n' "$*"
	"$@" >/tmp/run.out 2>&1
	rc=$?
	sed 's/^/     /' /tmp/run.out
	return $rc
}

loaded() { grep -q "^$1 " /proc/modules; }

# have_event PATTERN: whether a line of the sensor's output matches PATTERN
# (grep -E), waiting up to 15 s for it: a busy emulator can take that long
# to hand an event to user space.
have_event() {
	i=0
	until grep -qE -- "$1" /tmp/events 2>/dev/null; do
		[ $i -ge 15 ] && return 1
		sleep 1
		i=$((i + 1))
	done
}

have_watch=no
kmodguard watch --help >/dev/null 2>&1 && have_watch=yes
have_guard=no
kmodguard enforcer --help >/dev/null 2>&1 && have_guard=yes

# start_watch ARGS...: (re)start the sensor, its output in /tmp/events.
watch_pid=
start_watch() {
	stop_watch
	# Emptied here, not by the redirections below: those run in the
	# background child, maybe after the wait loop has read the last
	# sensor's "watching" line, and then a load would come before this
	# sensor is attached (CI saw it: step 4's load was not seen).
	: >/tmp/events
	: >/tmp/watch.log
	printf '   $ kmodguard watch %s &\n' "$*"
	kmodguard watch "$@" >/tmp/events 2>/tmp/watch.log &
	watch_pid=$!
	events_seen=0
	i=0
	until grep -q watching /tmp/watch.log 2>/dev/null; do
		if ! kill -0 "$watch_pid" 2>/dev/null || [ $i -ge 120 ]; then
			wrong "the sensor did not start:"
			sed 's/^/     /' /tmp/watch.log
			return 1
		fi
		sleep 1
		i=$((i + 1))
	done
}
stop_watch() {
	[ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null && wait "$watch_pid" 2>/dev/null
	watch_pid=
}

# events: the sensor's events since the last call, one line each. JSON
# lines are cut down to the fields a person reads first.
events_seen=0
last_events=0
events() {
	[ "$have_watch" = yes ] || return 0
	sleep 2
	total=$(wc -l </tmp/events)
	last_events=$((total - events_seen))
	[ "$last_events" -gt 0 ] || return 0
	tail -n "$last_events" /tmp/events | while read -r line; do
		case "$line" in
		'{'*) line=$(printf '%s' "$line" | grep -oE '"(syscall|res|name|this_module_name|name_mismatch|allowed|comm)":("[^"]*"|[^,}]*)' | tr '\n' ' ') ;;
		esac
		printf '     event: %s\n' "$line"
	done
	events_seen=$total
}

say "kernel $(uname -r), LSMs: $(cat /sys/kernel/security/lsm)"
say "modules on disk: $(ls $F | tr '\n' ' ')"

step "Watch module syscalls with the sensor"
if [ "$have_watch" = yes ]; then
	say "kmodguard watch follows init_module, finit_module and delete_module with eBPF"
	say "(tracepoints on sys_enter/sys_exit) and prints one line per syscall."
	start_watch
	run insmod $F/dummy.ko
	run rmmod dummy
	events
	if have_event 'finit_module.*dummy' && have_event 'delete_module.*dummy'; then
		seen "the sensor saw the load and the unload, with the module's digest and who did it"
	else
		wrong "the sensor did not report both syscalls"
	fi
else
	say "[sensor not in this build yet: 'kmodguard watch' will plug in here]"
	say "Until then the kernel's own list is the witness."
	run insmod $F/dummy.ko
	loaded dummy && seen "dummy is in /proc/modules: $(grep '^dummy ' /proc/modules)" || wrong "dummy did not load"
	run rmmod dummy
fi

step "Build the allowlist from what this machine loads"
say "A known-good machine loads what it needs; the allowlist records each module's"
say "names and SHA-256 digests. Here that is dummy."
run modprobe dummy
run kmodguard allowlist init --loaded --mode enforce --name demo -o $A || wrong "allowlist init failed"
run rmmod dummy
run cat $A
grep -q 'name: dummy' $A && seen "the allowlist holds dummy, with its digest" || wrong "dummy is not in the allowlist"
if [ "$have_watch" = yes ]; then
	say "The sensor now matches every load against the list, and prints JSON lines"
	say "(the Falco plugin's fields; a few are shown)."
	start_watch -o json --allowlist $A
fi

step "Check modules against the allowlist"
run kmodguard allowlist check -a $A $F/dummy.ko && seen "dummy is allowed" || wrong "dummy was refused"
run kmodguard allowlist check -a $A $F/veth.ko && wrong "veth was allowed" || seen "veth is not on the list"
say "A forged module: dummy's code, but .modinfo says 'dumbo' (signature stripped)."
run kmodguard inspect $F/dumbo.ko
run kmodguard allowlist check -a $A $F/dumbo.ko && wrong "the forgery was allowed" || seen "the forgery is refused: its two names differ"

step "Load an allowed module"
run insmod $F/dummy.ko
loaded dummy && seen "dummy loaded" || wrong "dummy did not load"
run rmmod dummy
events
if [ "$have_watch" = yes ]; then
	have_event '"name":"dummy".*"allowed":true' && seen "the sensor says: allowed" || wrong "the sensor did not report dummy as allowed"
fi

step "Load a module that is not on the allowlist (no guard yet)"
say "Without the guard, nothing stops the load: detection is what is left."
run insmod $F/veth.ko
loaded veth && seen "veth loaded" || wrong "veth did not load"
events
if [ "$have_watch" = yes ]; then
	have_event '"name":"veth".*"allowed":false' && seen "the sensor says: not allowed (a Falco rule alerts on this)" || wrong "the sensor did not flag veth"
	run insmod $F/dumbo.ko
	events
	have_event '"name_mismatch":true' && seen "the forgery loads (as dummy) and the sensor flags its two names" || wrong "the sensor did not flag the forgery"
	run rmmod dummy
	run rmmod veth
	events
else
	run kmodguard allowlist check -a $A $F/veth.ko
	seen "veth is loaded but not allowed: a detection"
	run rmmod veth
fi

step "Turn on the guard (BPF LSM) and try again"
if [ "$have_guard" = yes ]; then
	say "kmodguard enforcer run loads a BPF LSM program that hashes the kernel's own"
	say "copy of every module and refuses what the allowlist does not admit."
	kmodguard enforcer run --allowlist $A >/tmp/enforcer.log 2>&1 &
	guard_pid=$!
	i=0
	until kmodguard enforcer status >/dev/null 2>&1 || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
	run kmodguard enforcer status || wrong "the guard did not come up"
	run insmod $F/veth.ko && wrong "veth loaded past the guard" || seen "veth is blocked: the kernel refused it"
	loaded veth && wrong "veth is in /proc/modules"
	run insmod $F/dumbo.ko && wrong "the forgery loaded past the guard" || seen "the forged dumbo is blocked too"
	events
	[ "$have_watch" = yes ] && seen "the sensor still sees each attempt, refused with res=-1 (EPERM)"
	run insmod $F/dummy.ko && seen "dummy, which is listed, still loads" || wrong "dummy was blocked"
	run rmmod dummy
	events
	sleep 1
	say "The guard's log:"
	sed 's/^/     /' /tmp/enforcer.log
	run kmodguard enforcer stop
	kill $guard_pid 2>/dev/null
else
	say "[guard not in this build yet: 'kmodguard enforcer run' will plug in here]"
fi

stop_watch

printf '\n'
if [ $failures -eq 0 ]; then
	say "Demo complete: every step behaved as described."
else
	say "Demo finished with $failures unexpected result(s)."
fi
exit $failures
