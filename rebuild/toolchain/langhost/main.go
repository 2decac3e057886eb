// pulumi-language-python: a small Pulumi language host for Python programs, written for `rebuild`.
//
// # Why this exists
//
// The upstream host lives in the Go module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3,
// which our module proxy does not serve, while github.com/pulumi/pulumi/sdk/v3 (the gRPC protocol, the
// helpers and the `pulumi-language-python-exec` shim) is available. This file implements the language
// host protocol on top of sdk/v3 only. It deliberately covers what `pulumi up / preview / destroy /
// refresh / stack / config / about / install` need for Python projects whose dependencies are managed
// outside of Pulumi (by rebuild), and nothing more.
//
// How the engine talks to us
//
//  1. The engine starts `pulumi-language-python [flags] <engine-address>` in the program directory.
//     Flags it may pass: `--logtostderr`, `-v=N`, `--tracing <endpoint>`; older engines and tests also
//     pass `-root`, `-virtualenv`, `-typechecker`, `-toolchain`, `-use-executor`. All are accepted; unknown
//     flags are ignored so that a newer engine can never make the host fail to start.
//  2. We listen on 127.0.0.1 with a kernel-chosen port, print the port on stdout (a single line) and
//     serve pulumirpc.LanguageRuntime until the engine interrupts us (SIGINT/SIGTERM), the engine stops
//     answering health checks, or the process is killed.
//  3. Anything we (or the Python programs we start) write to stdout/stderr after the port line is
//     forwarded by the engine to the user as diagnostics, which is how program output and Python
//     tracebacks reach the console.
//
// Which Python is used (for Run and for every query we make about the environment)
//
//  1. The `virtualenv` runtime option from Pulumi.yaml (`runtime: {name: python, options: {virtualenv:
//     DIR}}`): `<DIR>/bin/python`, where a relative DIR is taken relative to the project root (the
//     directory holding Pulumi.yaml). The program then runs "inside" the venv: VIRTUAL_ENV is set,
//     `<DIR>/bin` is put first on PATH and PYTHONHOME is removed. With `toolchain: uv` and no
//     virtualenv, DIR defaults to `.venv` (uv's convention).
//  2. Otherwise the command named by the environment variable PULUMI_PYTHON_CMD (a name on PATH or a path).
//  3. Otherwise `python3` from PATH.
//
// Nothing is ever installed: a missing virtualenv is reported as an error with the commands to fix it.
//
// # Running a program
//
// Run starts `<python> <dir of this binary>/pulumi-language-python-exec --monitor ... --engine ...
// --project ... --root_directory ... --stack ... --pwd ... --dry_run ... --parallel ... [--tracing ...]
// [--organization ...] <entry point> [args...]` in the program directory with PULUMI_CONFIG (JSON object
// of the stack configuration) and PULUMI_CONFIG_SECRET_KEYS (JSON list of the secret keys) in its
// environment. The exec shim ships with the Pulumi sources and is copied next to this binary by the
// build recipe. Exit code 0 is success; exit code 32 means "the program already showed the user an
// error" (we answer bail=true so the engine adds nothing); any other exit code becomes an error string.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// version is stamped at build time with `-ldflags "-X main.version=vX.Y.Z"`; the engine reads it through
// GetPluginInfo.
var version = "dev"

const (
	// execShimName is the Python script (shipped with the Pulumi SDK sources) that connects a user program
	// to the engine; it must sit next to this binary.
	execShimName = "pulumi-language-python-exec"

	// exitUserActionable is the exit code the exec shim uses after it has already reported an error to the
	// user (for example an unhandled exception, whose traceback was logged through the engine).
	exitUserActionable = 32

	// Environment variables read by the Python SDK (pulumi/runtime/config.py).
	envConfig           = "PULUMI_CONFIG"
	envConfigSecretKeys = "PULUMI_CONFIG_SECRET_KEYS"

	// envPythonCmd overrides the interpreter when no virtualenv is configured.
	envPythonCmd = "PULUMI_PYTHON_CMD"

	// How long a program gets to exit after SIGINT before it is killed.
	interruptGrace = 5 * time.Second
)

// ---------------------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------------------

// cliOptions is what we understand from our command line.
type cliOptions struct {
	engineAddress string // last positional argument
	tracing       string // --tracing <endpoint>, forwarded to the exec shim
	executor      string // --use-executor <path>: use this exec shim instead of the one next to the binary
	logToStderr   bool   // --logtostderr
	verbose       int    // -v=N
	showVersion   bool   // --version
}

// flagsWithValue lists the flags that take a value in the following argument when written without `=`.
var flagsWithValue = map[string]bool{
	"tracing": true, "use-executor": true, "root": true, "virtualenv": true,
	"typechecker": true, "toolchain": true, "binary": true,
}

// parseCommandLine is a tolerant parser: it accepts `-flag`, `--flag`, `-flag=value` and `-flag value`,
// ignores flags it does not know and takes the last positional argument as the engine address. We do
// not use the standard flag package because it rejects unknown flags, and a language host that refuses to
// start breaks every Pulumi command.
func parseCommandLine(args []string) cliOptions {
	var o cliOptions
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name := strings.TrimLeft(arg, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		// Fetch the value from the next argument for flags that need one.
		next := func() string {
			if !hasValue && i+1 < len(args) {
				i++
				return args[i]
			}
			return value
		}
		switch {
		case name == "v":
			// glog style `-v=3`; also accept `-v 3`.
			if !hasValue && i+1 < len(args) && isDigits(args[i+1]) {
				value = next()
			}
			if n, err := strconv.Atoi(value); err == nil {
				o.verbose = n
			}
		case name == "logtostderr":
			o.logToStderr = !hasValue || value == "true" || value == "1"
		case name == "version":
			o.showVersion = true
		case name == "tracing":
			o.tracing = next()
		case name == "use-executor":
			o.executor = next()
		case flagsWithValue[name]:
			_ = next() // obsolete flags (the options now arrive with every request): accept and ignore
		default:
			// Unknown boolean-looking flag: ignore it.
		}
	}
	if len(positional) > 0 {
		o.engineAddress = positional[len(positional)-1]
	}
	return o
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------------------

func main() {
	opts := parseCommandLine(os.Args[1:])
	if opts.showVersion {
		fmt.Println(version)
		return
	}
	logging.InitLogging(opts.logToStderr, opts.verbose, opts.verbose > 0)

	shim, err := locateExecShim(opts.executor)
	if err != nil {
		fail(err)
	}
	logging.V(3).Infof("pulumi-language-python %s: using exec shim %s", version, shim)

	// ctx ends on SIGINT/SIGTERM (the engine interrupts its plugins' process group when it is done with
	// them) or when the engine stops answering health checks.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	host := newLanguageHost(shim, opts.engineAddress, opts.tracing)

	if opts.engineAddress != "" {
		// Exit on our own if the engine goes away without telling us (e.g. it crashed).
		if err := rpcutil.Healthcheck(ctx, opts.engineAddress, 5*time.Minute, stop); err != nil {
			fail(fmt.Errorf("could not start the engine health check: %w", err))
		}
		// The health check takes up to 5 minutes to notice; an engine killed with SIGKILL is seen
		// at once: we are reparented. (Plugins run in their own process group, so a kill of the
		// engine's group never reaches us.)
		go watchParent(ctx, os.Getppid(), stop)
	}

	// rpcutil stops the server gracefully (letting in-flight calls finish) once cancel is closed. Before
	// that we interrupt running programs so that an in-flight Run can return.
	cancel := make(chan bool)
	go func() {
		<-ctx.Done()
		host.stopPrograms()
		close(cancel)
	}()

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fail(fmt.Errorf("could not start the language host gRPC server: %w", err))
	}

	// The engine reads exactly one line from our stdout: the port.
	fmt.Printf("%d\n", handle.Port)

	if err := <-handle.Done; err != nil {
		fail(fmt.Errorf("language host gRPC server stopped: %w", err))
	}
}

// fail reports a fatal start-up error on stderr (which the engine shows to the user) and exits.
func fail(err error) {
	fmt.Fprintf(os.Stderr, "error: pulumi-language-python: %v\n", err)
	os.Exit(1)
}

// locateExecShim finds pulumi-language-python-exec: the --use-executor path if given, else next to the
// (symlink-resolved) host binary.
func locateExecShim(given string) (string, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Errorf("the executor given with --use-executor (%s) is not usable: %w", given, err)
		}
		return given, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot determine the path of the language host binary: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	shim := filepath.Join(filepath.Dir(self), execShimName)
	if _, err := os.Stat(shim); err != nil {
		return "", fmt.Errorf("%s not found next to the host binary (expected %s); "+
			"reinstall the toolchain so that both files are in the same directory", execShimName, shim)
	}
	return shim, nil
}

// ---------------------------------------------------------------------------------------------------------
// The language host
// ---------------------------------------------------------------------------------------------------------

// languageHost implements pulumirpc.LanguageRuntimeServer. RPCs that are not overridden answer
// Unimplemented, which the engine handles gracefully for every optional method (Template, Link, Pack,
// GenerateProgram/Project/Package, RunPlugin).
type languageHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	shim    string // path of pulumi-language-python-exec
	tracing string // tracing endpoint forwarded to programs

	mu            sync.Mutex
	engineAddress string                 // from argv, or from Handshake when attached
	running       map[*exec.Cmd]struct{} // programs started by Run that have not exited yet
}

func newLanguageHost(shim, engineAddress, tracing string) *languageHost {
	return &languageHost{
		shim:          shim,
		tracing:       tracing,
		engineAddress: engineAddress,
		running:       map[*exec.Cmd]struct{}{},
	}
}

func (h *languageHost) engine() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engineAddress
}

// Handshake is only sent by engines that attach to an already running host (PULUMI_DEBUG_LANGUAGES);
// a launched host gets the engine address on its command line instead.
func (h *languageHost) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if addr := req.GetEngineAddress(); addr != "" {
		h.mu.Lock()
		h.engineAddress = addr
		h.mu.Unlock()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

// GetPluginInfo reports the version the binary was built with.
func (h *languageHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// GetRequiredPackages is how the engine learns which resource plugins the program will need before it
// runs it (to check/install them). We answer from the `pulumi-plugin.json` files of the Python packages
// installed in the program's environment, e.g. pulumi_kubernetes -> kubernetes v4.25.0.
func (h *languageHost) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := h.installedPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Name:             p.name,
			Kind:             "resource",
			Version:          p.version,
			Server:           p.server,
			Parameterization: p.parameterization.toRPC(),
			Extension:        p.extension.toRPC(),
		})
	}
	return resp, nil
}

// GetRequiredPlugins is the pre-GetRequiredPackages form of the same question; engines only fall back to
// it when GetRequiredPackages is unimplemented, but answering it too costs nothing.
func (h *languageHost) GetRequiredPlugins(
	ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{ProgramDirectory: req.GetPwd(), EntryPoint: req.GetProgram()}
	}
	plugins, err := h.installedPlugins(ctx, info)
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Name: p.name, Kind: "resource", Version: p.version, Server: p.server,
		})
	}
	return resp, nil
}

// Run executes the program once (a preview when DryRun is set, an update otherwise) and reports how it
// ended. Program failures are reported in the response (Error/Bail), not as RPC errors: an RPC error
// means the host itself is broken.
func (h *languageHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	if info == nil { // engines older than ProgramInfo
		info = &pulumirpc.ProgramInfo{ProgramDirectory: req.GetPwd(), EntryPoint: req.GetProgram()}
	}
	py, err := resolvePython(info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	config, err := json.Marshal(nonNilMap(req.GetConfig()))
	if err != nil {
		return nil, fmt.Errorf("failed to serialize the stack configuration: %w", err)
	}
	secretKeys, err := json.Marshal(nonNilSlice(req.GetConfigSecretKeys()))
	if err != nil {
		return nil, fmt.Errorf("failed to serialize the secret configuration keys: %w", err)
	}

	args := append([]string{h.shim}, h.shimArguments(req, info)...)
	cmd := exec.CommandContext(ctx, py.exe, args...)
	cmd.Dir = firstNonEmpty(req.GetPwd(), info.GetProgramDirectory())
	cmd.Env = py.environ(map[string]string{envConfig: string(config), envConfigSecretKeys: string(secretKeys)})
	// The engine forwards our stdout/stderr to the user, so the program's output goes straight there.
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	// If the engine abandons the call, ask the program to stop and kill it if it does not.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = interruptGrace

	logging.V(5).Infof("Run: %s %s (dir %s, python from %s)", py.exe, strings.Join(args, " "), cmd.Dir, py.source)

	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("could not start the Python interpreter %s (%s): %v", py.exe, py.source, err),
		}, nil
	}
	h.track(cmd, true)
	err = cmd.Wait()
	h.track(cmd, false)

	// Make sure everything the program printed has reached the engine before we answer.
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()

	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Exited() && ws.ExitStatus() == exitUserActionable:
				return &pulumirpc.RunResponse{Bail: true}, nil
			case ws.Exited():
				return &pulumirpc.RunResponse{
					Error: fmt.Sprintf("the Python program exited with non-zero exit code: %d", ws.ExitStatus()),
				}, nil
			case ws.Signaled():
				return &pulumirpc.RunResponse{
					Error: fmt.Sprintf("the Python program was terminated by signal %v", ws.Signal()),
				}, nil
			}
		}
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf("the Python program exited unexpectedly: %v", err)}, nil
}

// shimArguments builds the command line understood by pulumi-language-python-exec (see its argparse).
// dry_run and parallel are always passed: the shim converts them without checking for absence.
func (h *languageHost) shimArguments(req *pulumirpc.RunRequest, info *pulumirpc.ProgramInfo) []string {
	var args []string
	add := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engine())
	add("project", req.GetProject())
	add("root_directory", info.GetRootDirectory())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	// The entry point is relative to the program directory; "." means `__main__.py` there.
	args = append(args, firstNonEmpty(info.GetEntryPoint(), req.GetProgram(), "."))
	return append(args, req.GetArgs()...)
}

// track records programs that are running so that Cancel and shutdown can stop them.
func (h *languageHost) track(cmd *exec.Cmd, running bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if running {
		h.running[cmd] = struct{}{}
	} else {
		delete(h.running, cmd)
	}
}

// stopPrograms interrupts every running program and kills the ones still alive after interruptGrace.
// It returns immediately.
func (h *languageHost) stopPrograms() {
	h.mu.Lock()
	var procs []*os.Process
	for cmd := range h.running {
		if cmd.Process != nil {
			procs = append(procs, cmd.Process)
		}
	}
	h.mu.Unlock()
	for _, p := range procs {
		_ = p.Signal(os.Interrupt)
	}
	if len(procs) > 0 {
		time.AfterFunc(interruptGrace, func() {
			for _, p := range procs {
				_ = p.Kill() // harmless when the process is gone: Wait has reaped it and Kill reports "done"
			}
		})
	}
}

// Cancel asks the host to abort ongoing work before the engine shuts it down: running programs are
// interrupted (then killed after a grace period). The server keeps answering until the engine stops us.
func (h *languageHost) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.stopPrograms()
	return &emptypb.Empty{}, nil
}

// InstallDependencies backs `pulumi install` (and dependency installation in `pulumi new`). rebuild
// manages Python environments itself, so this only checks that the interpreter resolves and says so.
func (h *languageHost) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest, server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{ProgramDirectory: req.GetDirectory()}
	}
	py, err := resolvePython(info)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("Python dependencies are managed outside of Pulumi; nothing to install (interpreter: %s, %s).\n",
		py.exe, py.source)
	return server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: []byte(msg)})
}

// RuntimeOptionsPrompts is used by `pulumi new` to ask for runtime options; we have none to ask for.
func (h *languageHost) RuntimeOptionsPrompts(
	context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// About backs `pulumi about`: which interpreter runs the program and its version.
func (h *languageHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, err := resolvePython(req.GetInfo())
	if err != nil {
		return nil, err
	}
	var out struct {
		Executable string `json:"executable"`
		Version    string `json:"version"`
	}
	if err := py.runJSON(ctx, programDir(req.GetInfo()), aboutScript, &out); err != nil {
		return nil, err
	}
	meta := map[string]string{"source": py.source}
	if py.virtualenv != "" {
		meta["virtualenv"] = py.virtualenv
	}
	return &pulumirpc.AboutResponse{Executable: out.Executable, Version: out.Version, Metadata: meta}, nil
}

// GetProgramDependencies backs `pulumi about` (and update metadata): the Python distributions installed
// in the program's environment, either all of them or only those no other distribution requires.
func (h *languageHost) GetProgramDependencies(
	ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	info := req.GetInfo()
	if info == nil {
		info = &pulumirpc.ProgramInfo{ProgramDirectory: req.GetPwd(), EntryPoint: req.GetProgram()}
	}
	py, err := resolvePython(info)
	if err != nil {
		return nil, err
	}
	var dists []struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		TopLevel bool   `json:"top_level"`
	}
	if err := py.runJSON(ctx, programDir(info), dependenciesScript, &dists); err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, d := range dists {
		if req.GetTransitiveDependencies() || d.TopLevel {
			resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
		}
	}
	return resp, nil
}

// ---------------------------------------------------------------------------------------------------------
// Choosing the interpreter
// ---------------------------------------------------------------------------------------------------------

// pythonEnv is the interpreter chosen for a program and how to run it.
type pythonEnv struct {
	exe        string // interpreter path (or name found on PATH)
	virtualenv string // absolute virtualenv directory, "" when not using one
	source     string // where the choice came from, for messages
}

// resolvePython applies the selection rules described in the file header.
func resolvePython(info *pulumirpc.ProgramInfo) (pythonEnv, error) {
	options := info.GetOptions().AsMap() // nil-safe: empty map when there are no options

	venv := ""
	if v, ok := options["virtualenv"]; ok && v != nil {
		s, isString := v.(string)
		if !isString {
			return pythonEnv{}, fmt.Errorf("the 'virtualenv' runtime option in Pulumi.yaml must be a string, got %v", v)
		}
		venv = s
	}
	if v, ok := options["toolchain"]; ok && v != nil {
		switch tc, _ := v.(string); tc {
		case "", "pip":
		case "uv":
			if venv == "" {
				venv = ".venv" // where `uv sync` creates the environment
			}
		default:
			return pythonEnv{}, fmt.Errorf("the Python toolchain %q (runtime option 'toolchain' in Pulumi.yaml) is not "+
				"supported by this language host; use 'pip' or 'uv' with a 'virtualenv' option", v)
		}
	}

	if venv != "" {
		dir := venv
		if !filepath.IsAbs(dir) {
			base := firstNonEmpty(info.GetRootDirectory(), info.GetProgramDirectory())
			if base == "" {
				base, _ = os.Getwd()
			}
			dir = filepath.Join(base, dir)
		}
		dir = filepath.Clean(dir)
		exe := filepath.Join(dir, "bin", "python")
		if _, err := os.Stat(exe); err != nil {
			what := "does not exist"
			if st, statErr := os.Stat(dir); statErr == nil && st.IsDir() {
				what = "is not a virtual environment (no bin/python)"
			}
			return pythonEnv{}, fmt.Errorf("the 'virtualenv' runtime option in Pulumi.yaml is set to %q, but %s %s; "+
				"create it with `python3 -m venv %s` and install the program's requirements with "+
				"`%s -m pip install -r requirements.txt`", venv, dir, what, dir, exe)
		}
		return pythonEnv{exe: exe, virtualenv: dir, source: "virtualenv " + dir}, nil
	}

	if cmd := strings.TrimSpace(os.Getenv(envPythonCmd)); cmd != "" {
		exe, err := exec.LookPath(cmd)
		if err != nil {
			return pythonEnv{}, fmt.Errorf("%s is set to %q, but it cannot be run: %v", envPythonCmd, cmd, err)
		}
		return pythonEnv{exe: exe, source: envPythonCmd}, nil
	}

	exe, err := exec.LookPath("python3")
	if err != nil {
		return pythonEnv{}, fmt.Errorf("python3 was not found on PATH; install Python 3, set %s, or set the "+
			"'virtualenv' runtime option in Pulumi.yaml", envPythonCmd)
	}
	return pythonEnv{exe: exe, source: "python3 on PATH"}, nil
}

// environ returns the environment for a process run with this interpreter: ours, "activated" for the
// virtualenv if there is one, plus the given variables.
func (p pythonEnv) environ(extra map[string]string) []string {
	set := map[string]string{}
	drop := map[string]bool{}
	if p.virtualenv != "" {
		set["VIRTUAL_ENV"] = p.virtualenv
		set["PATH"] = filepath.Join(p.virtualenv, "bin") + string(os.PathListSeparator) + os.Getenv("PATH")
		drop["PYTHONHOME"] = true
	}
	for k, v := range extra {
		set[k] = v
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := set[k]; overridden || drop[k] {
			continue
		}
		env = append(env, kv)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+set[k])
	}
	return env
}

// runJSON runs a small inline Python script with this interpreter and decodes its stdout as JSON.
func (p pythonEnv) runJSON(ctx context.Context, dir, script string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.exe, "-c", script)
	cmd.Dir = dir
	cmd.Env = p.environ(nil)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("inspecting the Python environment with %s (%s) failed: %v: %s",
			p.exe, p.source, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		return fmt.Errorf("inspecting the Python environment with %s (%s) returned unexpected output: %v",
			p.exe, p.source, err)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------------------
// Plugins declared by installed packages
// ---------------------------------------------------------------------------------------------------------

// pluginsScript prints, as JSON, every `<module>/pulumi-plugin.json` (or the older `pulumiplugin.json`)
// found in the interpreter's import path, with the version of the distribution providing the module
// (used when the file has no version). The current directory (the empty sys.path entry) is skipped:
// only installed packages count, as with upstream's `pip list`-based discovery.
const pluginsScript = `
import glob, json, os, sys
try:
    from importlib import metadata
    owners = metadata.packages_distributions()
except Exception:
    metadata, owners = None, {}

def dist_version(module):
    for dist in owners.get(module, []):
        try:
            return metadata.version(dist)
        except Exception:
            pass
    return ""

cwd = os.path.abspath(os.getcwd())
seen, found = set(), []
for entry in sys.path:
    if not entry or not os.path.isdir(entry) or os.path.abspath(entry) == cwd:
        continue
    for fname in ("pulumi-plugin.json", "pulumiplugin.json"):
        for path in sorted(glob.glob(os.path.join(entry, "*", fname))):
            module = os.path.basename(os.path.dirname(path))
            if module in seen:
                continue
            seen.add(module)
            item = {"module": module, "path": path, "dist_version": dist_version(module)}
            try:
                with open(path, encoding="utf-8") as f:
                    item["plugin"] = json.load(f)
            except Exception as e:
                item["error"] = str(e)
            found.append(item)
print(json.dumps(found))
`

// pluginJSON mirrors the fields of pulumi-plugin.json that matter to the engine.
type pluginJSON struct {
	Resource                  bool                  `json:"resource"`
	Name                      string                `json:"name"`
	Version                   string                `json:"version"`
	Server                    string                `json:"server"`
	Parameterization          *parameterizationJSON `json:"parameterization"`
	ExtensionParameterization *parameterizationJSON `json:"extensionParameterization"`
}

// parameterizationJSON describes a parameterized package (value is base64 in the file).
type parameterizationJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Value   []byte `json:"value"`
}

func (p *parameterizationJSON) toRPC() *pulumirpc.PackageParameterization {
	if p == nil {
		return nil
	}
	return &pulumirpc.PackageParameterization{Name: p.Name, Version: p.Version, Value: p.Value}
}

// requiredPlugin is one resource plugin the program's environment declares.
type requiredPlugin struct {
	name, version, server       string
	parameterization, extension *parameterizationJSON
}

var plainSemver = regexp.MustCompile(`^v?\d+\.\d+\.\d+$`)

// installedPlugins lists the resource plugins declared by the packages installed for the program.
func (h *languageHost) installedPlugins(ctx context.Context, info *pulumirpc.ProgramInfo) ([]requiredPlugin, error) {
	py, err := resolvePython(info)
	if err != nil {
		return nil, err
	}
	var found []struct {
		Module      string          `json:"module"`
		Path        string          `json:"path"`
		DistVersion string          `json:"dist_version"`
		Plugin      json.RawMessage `json:"plugin"`
		Error       string          `json:"error"`
	}
	if err := py.runJSON(ctx, programDir(info), pluginsScript, &found); err != nil {
		return nil, err
	}
	var plugins []requiredPlugin
	for _, f := range found {
		if f.Error != "" {
			return nil, fmt.Errorf("cannot read %s: %s", f.Path, f.Error)
		}
		var pj pluginJSON
		if err := json.Unmarshal(f.Plugin, &pj); err != nil {
			return nil, fmt.Errorf("cannot parse %s: %w", f.Path, err)
		}
		if !pj.Resource {
			continue // the package says it has no plugin (e.g. the pulumi SDK itself, policy packs)
		}
		name := pj.Name
		if name == "" { // pulumi_azure_native -> azure-native
			name = strings.TrimPrefix(strings.ReplaceAll(f.Module, "_", "-"), "pulumi-")
		}
		ver := pj.Version
		if ver == "" {
			// Only a plain X.Y.Z distribution version maps to a plugin version; pre-release Python
			// versions (e.g. 1.2.3a123) cannot be mapped back reliably, so skip them (as upstream does).
			if !plainSemver.MatchString(f.DistVersion) {
				logging.V(5).Infof("GetRequiredPackages: no plugin version for %s (package version %q); skipped",
					f.Module, f.DistVersion)
				continue
			}
			ver = f.DistVersion
		}
		if !strings.HasPrefix(ver, "v") {
			ver = "v" + ver
		}
		plugins = append(plugins, requiredPlugin{
			name: name, version: ver, server: pj.Server,
			parameterization: pj.Parameterization, extension: pj.ExtensionParameterization,
		})
	}
	logging.V(5).Infof("GetRequiredPackages: %d resource plugin(s) declared in %s", len(plugins), py.source)
	return plugins, nil
}

// ---------------------------------------------------------------------------------------------------------
// Small Python helpers for About and GetProgramDependencies
// ---------------------------------------------------------------------------------------------------------

const aboutScript = `
import json, platform, sys
print(json.dumps({"executable": sys.executable, "version": platform.python_version()}))
`

// dependenciesScript lists installed distributions; top_level is false for those another installed
// distribution requires (an approximation of `pip list --not-required`).
const dependenciesScript = `
import json, re
from importlib import metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

dists = {}
for d in metadata.distributions():
    name = d.metadata.get("Name")
    if name and norm(name) not in dists:
        dists[norm(name)] = (name, d.version, d.requires or [])
required = set()
for _, _, reqs in dists.values():
    for r in reqs:
        if "extra ==" in r.replace("'", '"').replace('"', ""):
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r)
        if m:
            required.add(norm(m.group(1)))
print(json.dumps([{"name": n, "version": v, "top_level": k not in required}
                  for k, (n, v, _) in sorted(dists.items())]))
`

// ---------------------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------------------

func programDir(info *pulumirpc.ProgramInfo) string {
	dir := firstNonEmpty(info.GetProgramDirectory(), info.GetRootDirectory())
	if dir == "" {
		return ""
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "" // run in our own working directory rather than fail on a bad hint
	}
	return dir
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Compile-time check that languageHost implements the service.
var _ pulumirpc.LanguageRuntimeServer = (*languageHost)(nil)

// watchParent calls stop once this process's parent is no longer ppid (it died and we were
// reparented to init or a subreaper).
func watchParent(ctx context.Context, ppid int, stop func()) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if os.Getppid() != ppid {
				logging.V(3).Infof("the engine (pid %d) is gone; stopping", ppid)
				stop()
				return
			}
		}
	}
}
