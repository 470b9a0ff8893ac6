package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/kmod"
)

func init() { register(newAllowlistCmd) }

// defaultAllowlist is where every command looks unless told otherwise.
const defaultAllowlist = "/etc/kmodguard/allowlist.yaml"

func newAllowlistCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "allowlist",
		Short: "Build, edit, check, sign and export the module allowlist",
		Long: `The allowlist is the one source of truth for which kernel modules may load.
The Falco plugin, 'kmodguard watch' and the enforcer all read it.

It is a YAML file (default ` + defaultAllowlist + `):

  apiVersion: kmodguard.io/v1
  kind: ModuleAllowlist
  metadata:
    name: prod-hosts
  spec:
    mode: enforce              # enforce | audit
    modules:
      - name: dummy
        sha256:                # the ELF image's digest and the .ko.xz file's
          - 5f0c...
          - 9ab1...
        kernel: 6.1.0-56-amd64 # the release the digests were taken on
        comment: test NIC
      - name: veth             # no digest: matches on the name alone (lint warns)

A module is allowed when both of its names (.modinfo name= and the name it
registers under) equal an entry's name ('-' and '_' are the same), and its
file digest or its ELF digest is listed in that entry, or the entry lists no
digest. A module whose two names differ is never allowed.

An allowlist can be signed (ed25519, detached, FILE.sig). Commands that read
one take --pubkey to require a valid signature, and --require-signature to
refuse to run without a key.`,
		Example: `  # build a baseline from the running kernel's modules tree, then check it
  kmodguard allowlist init --modules-dir /lib/modules/$(uname -r) --mode audit --out-file allow.yaml
  kmodguard allowlist lint allow.yaml

  # sign it on a build machine (the private key never goes to the hosts)
  kmodguard allowlist keygen --prefix ~/kmodguard-signing
  kmodguard allowlist sign --key ~/kmodguard-signing.key allow.yaml

  # on a host, with only the public key: check a module against the signed list
  kmodguard allowlist check -a allow.yaml --pubkey /etc/kmodguard/signing.pub ./dummy.ko`,
	}
	for _, f := range []func() *cobra.Command{
		newAllowlistInitCmd, newAllowlistAddCmd, newAllowlistRemoveCmd, newAllowlistListCmd,
		newAllowlistLintCmd, newAllowlistDiffCmd, newAllowlistCheckCmd, newAllowlistExportCmd,
		newAllowlistKeygenCmd, newAllowlistSignCmd, newAllowlistVerifyCmd,
	} {
		cmd.AddCommand(f())
	}
	return cmd
}

// trustFlags are --pubkey and --require-signature, for commands that read
// an allowlist.
type trustFlags struct {
	pubkey  string
	require bool
}

func (t *trustFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.pubkey, "pubkey", "", "PEM public key: refuse the allowlist unless FILE.sig verifies under it")
	cmd.Flags().BoolVar(&t.require, "require-signature", false, "refuse to run without --pubkey")
	completeFiles(cmd, "pubkey", "pub", "pem")
	// Without -a (lint, diff, enforcer apply), allowlists are the arguments.
	if cmd.Flags().Lookup("allowlist") != nil {
		completeFiles(cmd, "allowlist", "yaml", "yml")
	} else {
		cmd.ValidArgsFunction = completeAllowlists
	}
}

// load loads the allowlist at path under the flags.
func (t *trustFlags) load(path string) (*allowlist.Allowlist, error) {
	s, err := t.source(path)
	if err != nil {
		return nil, err
	}
	return s.Current(), nil
}

// source loads path as an allowlist.Source, for commands that reload it.
func (t *trustFlags) source(path string) (*allowlist.Source, error) {
	opts := allowlist.LoadOptions{RequireSignature: t.require}
	if t.pubkey != "" {
		k, err := allowlist.LoadPublicKey(t.pubkey)
		if err != nil {
			return nil, withCode(exitError, err)
		}
		opts.PublicKey = k
	}
	s, err := allowlist.NewSource(path, opts)
	if err != nil {
		return nil, withCode(exitError, err)
	}
	return s, nil
}

// saveList writes the allowlist atomically and, when key is set, signs it.
// Without a key it warns that an existing signature went stale.
func saveList(stderr io.Writer, path string, a *allowlist.Allowlist, key string) error {
	if err := allowlist.Save(path, a); err != nil {
		return withCode(exitError, err)
	}
	if key != "" {
		priv, err := allowlist.LoadPrivateKey(key)
		if err != nil {
			return withCode(exitError, err)
		}
		if err := allowlist.SignFile(path, priv); err != nil {
			return withCode(exitError, err)
		}
		return nil
	}
	if _, err := os.Stat(path + allowlist.SigSuffix); err == nil {
		fmt.Fprintf(stderr, "kmodguard: warning: %s no longer matches %s; re-sign it: kmodguard allowlist sign --key KEY %s\n",
			path+allowlist.SigSuffix, path, path)
	}
	return nil
}

// completeModes offers the allowlist modes for cmd's --mode.
func completeModes(cmd *cobra.Command) {
	completeValues(cmd, "mode",
		cobra.CompletionWithDesc(string(allowlist.ModeEnforce), "refuse modules the allowlist does not admit"),
		cobra.CompletionWithDesc(string(allowlist.ModeAudit), "let them load and report them"))
}

// ---- init ----

type initOptions struct {
	modulesDir  string
	deb         string
	loaded      bool
	procModules string
	kernel      string
	mode        string
	name        string
	outFile     string
	jobs        int
}

func newAllowlistInitCmd() *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init (--modules-dir DIR | --deb PACKAGE | --loaded) --out-file FILE",
		Short: "Build an allowlist from a modules tree or from the loaded modules",
		Long: `Build an allowlist with one entry per module name, each carrying the digests
of the file and of its ELF image (they differ for .ko.xz, .ko.zst and
.ko.gz). When a name appears in several files, every file's digests go into
its one entry.

  --modules-dir DIR  takes every .ko* file under DIR (for example an image's
                     /lib/modules/RELEASE, at image build time).
  --deb PACKAGE      takes every module file of a kernel package (.deb),
                     read as it is: no dpkg, nothing installed. A fleet
                     builds the list of the kernel it will roll out.
  --loaded           takes the modules loaded now (/proc/modules), found
                     through modules.dep of /lib/modules/$(uname -r), or of
                     --modules-dir when it is given.

Every file is inspected in full (ELF parsed, both names checked), in
parallel on all cores. A module whose two names differ is refused, and so
is a file that is not a module: the list is written only when every file
was read. A progress bar is shown when stderr is a terminal.`,
		Example: `  # the whole tree of the running kernel, in audit mode to start with
  kmodguard allowlist init --modules-dir /lib/modules/$(uname -r) --out-file /etc/kmodguard/allowlist.yaml

  # only what this host has loaded, enforced
  kmodguard allowlist init --loaded --mode enforce --out-file loaded.yaml

  # print to stdout
  kmodguard allowlist init --modules-dir ./rootfs/lib/modules/6.1.0-56-amd64 --out-file -

  # from the kernel package a fleet is about to install
  kmodguard allowlist init --deb linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb --mode enforce --out-file 6.1.0-57.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.modulesDir, "modules-dir", "", "take every .ko* under this tree (with --loaded: the tree whose modules.dep to use)")
	_ = cmd.MarkFlagDirname("modules-dir")
	f.StringVar(&o.deb, "deb", "", "take every module file of this kernel package (.deb)")
	completeFiles(cmd, "deb", "deb")
	f.BoolVar(&o.loaded, "loaded", false, "take the modules loaded now (/proc/modules)")
	f.StringVar(&o.procModules, "proc-modules", "/proc/modules", "where --loaded reads the loaded modules")
	f.StringVar(&o.kernel, "kernel", "", "kernel release to record in every entry (default: each module's vermagic)")
	f.StringVar(&o.mode, "mode", string(allowlist.ModeAudit), "spec.mode: audit or enforce")
	completeModes(cmd)
	f.StringVar(&o.name, "name", "", "metadata.name (default: the host name)")
	f.StringVar(&o.outFile, "out-file", "", "file to write, or - for stdout (required)")
	completeFiles(cmd, "out-file", "yaml", "yml")
	addFileAlias(cmd, &o.outFile, "--out-file")
	f.IntVarP(&o.jobs, "jobs", "j", runtime.GOMAXPROCS(0), "files inspected in parallel")
	_ = f.MarkHidden("proc-modules")
	return cmd
}

func runInit(stdout, stderr io.Writer, o initOptions) error {
	mode := allowlist.Mode(o.mode)
	if mode != allowlist.ModeAudit && mode != allowlist.ModeEnforce {
		return withCode(exitError, fmt.Errorf("--mode %q: want audit or enforce", o.mode))
	}
	if o.outFile == "" {
		// Not MarkFlagRequired: its message would name the deprecated -o too.
		return withCode(exitError, errors.New("say where to write the allowlist: --out-file FILE, or - for stdout"))
	}
	if o.modulesDir == "" && o.deb == "" && !o.loaded {
		return withCode(exitError, errors.New("say where the modules are: --modules-dir DIR, --deb PACKAGE or --loaded"))
	}
	if o.deb != "" && (o.modulesDir != "" || o.loaded) {
		return withCode(exitError, errors.New("--deb takes the package's modules: give it alone"))
	}
	if o.jobs < 1 {
		o.jobs = 1
	}
	if o.name == "" {
		o.name, _ = os.Hostname()
	}
	start := time.Now()
	var paths []string
	var err error
	relabel := func([]inspected) {}
	if o.deb != "" {
		var cleanup func()
		if paths, relabel, cleanup, err = debModules(o.deb); err != nil {
			return withCode(exitError, err)
		}
		defer cleanup()
	} else if o.loaded {
		dir := o.modulesDir
		if dir == "" {
			var u unix.Utsname
			if err := unix.Uname(&u); err != nil {
				return withCode(exitError, fmt.Errorf("uname: %w", err))
			}
			dir = filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
		}
		var missing []string
		paths, missing, err = loadedModulePaths(o.procModules, dir)
		if err != nil {
			return withCode(exitError, err)
		}
		if len(missing) > 0 {
			return withCode(exitError, fmt.Errorf("loaded modules not found in %s/modules.dep: %s (add their files with 'kmodguard allowlist add')",
				dir, strings.Join(missing, ", ")))
		}
	} else {
		paths, err = findModules(o.modulesDir)
		if err != nil {
			return withCode(exitError, err)
		}
	}
	if len(paths) == 0 {
		return withCode(exitError, errors.New("no module files found"))
	}

	bar := newProgress(stderr, "modules", len(paths))
	results := inspectAll(paths, o.jobs, bar)
	bar.finish()
	relabel(results)

	entries, err := buildEntries(results, o.kernel)
	if err != nil {
		return withCode(exitError, err)
	}
	a := allowlist.New(o.name, mode)
	a.Spec.Modules = entries
	a.Reindex()
	if o.outFile == "-" {
		data, err := allowlist.Marshal(a)
		if err != nil {
			return withCode(exitError, err)
		}
		if _, err := stdout.Write(data); err != nil {
			return withCode(exitError, fmt.Errorf("write: %w", err))
		}
	} else {
		// The default place, /etc/kmodguard, may not exist yet.
		if err := os.MkdirAll(filepath.Dir(o.outFile), 0o755); err != nil {
			return withCode(exitError, fmt.Errorf("create the allowlist's directory: %w", err))
		}
		if err := saveList(stderr, o.outFile, a, ""); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "kmodguard: %d files, %d module names, written to %s in %.2fs\n",
		len(paths), len(entries), o.outFile, time.Since(start).Seconds())
	return nil
}

// isModuleFile matches the names kmod loads: .ko, optionally compressed.
func isModuleFile(name string) bool {
	for _, s := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// findModules lists the module files under dir, sorted.
func findModules(dir string) ([]string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("modules dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("modules dir %s: not a directory", dir)
	}
	var paths []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && isModuleFile(d.Name()) && (d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0) {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk modules dir: %w", err)
	}
	sort.Strings(paths)
	return paths, nil
}

// loadedModulePaths resolves the names in /proc/modules to files through
// DIR/modules.dep. It returns the names it could not resolve.
func loadedModulePaths(procModules, dir string) (paths, missing []string, err error) {
	proc, err := os.ReadFile(procModules)
	if err != nil {
		return nil, nil, fmt.Errorf("loaded modules: %w", err)
	}
	depPath := filepath.Join(dir, "modules.dep")
	dep, err := os.ReadFile(depPath)
	if err != nil {
		return nil, nil, fmt.Errorf("loaded modules: %w", err)
	}
	byName := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(dep))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		file, _, ok := strings.Cut(sc.Text(), ":")
		if !ok || file == "" {
			continue
		}
		base := filepath.Base(file)
		i := strings.Index(base, ".ko")
		if i <= 0 {
			continue
		}
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, file)
		}
		byName[kmod.NormalizeName(base[:i])] = file
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", depPath, err)
	}
	for line := range strings.Lines(string(proc)) {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name == "" {
			continue
		}
		if p, ok := byName[kmod.NormalizeName(name)]; ok {
			paths = append(paths, p)
		} else {
			missing = append(missing, name)
		}
	}
	sort.Strings(paths)
	return paths, missing, nil
}

type inspected struct {
	path string
	mod  *kmod.Module
	err  error
}

// inspectAll runs kmod.Inspect over paths on jobs goroutines. Results keep
// the order of paths.
func inspectAll(paths []string, jobs int, bar *progress) []inspected {
	out := make([]inspected, len(paths))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(jobs, len(paths)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(paths) {
					return
				}
				m, err := kmod.Inspect(paths[i])
				out[i] = inspected{path: paths[i], mod: m, err: err}
				if m != nil {
					bar.add(m.FileSize)
				} else {
					bar.add(0)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// buildEntries folds inspected files into one entry per module name. It
// refuses files that failed to inspect and modules whose names differ.
func buildEntries(results []inspected, kernel string) ([]allowlist.Entry, error) {
	var problems []string
	byName := map[string]int{}
	releases := map[string]string{} // normalized name -> release, "" when they differ
	var entries []allowlist.Entry
	for _, r := range results {
		m := r.mod
		switch {
		case r.err != nil:
			problems = append(problems, r.err.Error())
			continue
		case m.NameMismatch:
			problems = append(problems, fmt.Sprintf("%s: name mismatch: .modinfo name=%q but struct module.name=%q; refusing to allow a forged module", r.path, m.Name, m.ThisModuleName))
			continue
		case m.Name == "" && m.ThisModuleName == "":
			problems = append(problems, fmt.Sprintf("%s: the module has no name", r.path))
			continue
		}
		name := m.Name
		if name == "" {
			name = m.ThisModuleName
		}
		if err := allowlist.ValidateName(name); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", r.path, err))
			continue
		}
		n := kmod.NormalizeName(name)
		release := ""
		if f := strings.Fields(m.Vermagic); len(f) > 0 {
			release = f[0]
		}
		i, ok := byName[n]
		if !ok {
			i = len(entries)
			byName[n] = i
			entries = append(entries, allowlist.Entry{Name: name})
			releases[n] = release
		} else if releases[n] != release {
			releases[n] = ""
		}
		e := &entries[i]
		for _, d := range []string{m.FileSHA256, m.ELFSHA256} {
			if d != "" && !slices.Contains(e.SHA256, d) {
				e.SHA256 = append(e.SHA256, d)
			}
		}
	}
	if len(problems) > 0 {
		const show = 10
		msg := strings.Join(problems[:min(show, len(problems))], "\n  ")
		if len(problems) > show {
			msg += fmt.Sprintf("\n  ... and %d more", len(problems)-show)
		}
		return nil, fmt.Errorf("%d of %d files cannot be allowed, nothing written:\n  %s", len(problems), len(results), msg)
	}
	for i := range entries {
		entries[i].Kernel = kernel
		if kernel == "" {
			entries[i].Kernel = releases[kmod.NormalizeName(entries[i].Name)]
		}
	}
	return entries, nil
}
