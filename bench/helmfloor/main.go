// Command helmfloor is bench/helm_releases.py's floor: the same Helm releases rebuild's
// helm-controller installs, installed by Helm's own Go library in one process.
//
// Why a Go program: the floor of "rebuild installs 20 HelmReleases" is what Helm itself needs
// for the same work, with nothing of Flux (no GitRepository fetch, no HelmChart artifact, no
// controller queue) and nothing of rebuild. It uses the Helm version helm-controller v1.4.3 is
// built with (helm.sh/helm/v3 v3.19.0: its go.mod), so both sides run the same install and
// wait code, and it sets what helm-controller sets on action.Install for a HelmRelease with
// default spec.install (internal/action/install.go): Wait and WaitForJobs true, a 5 minute
// timeout, CreateNamespace (the bench's HelmReleases have their Namespace in git, applied by
// kustomize-controller; here Helm creates it), the "secret" storage driver, and the client
// limits rebuild gives helm-controller (--kube-api-qps=500 --kube-api-burst=1000).
//
// Usage: helmfloor --kubeconfig FILE --spec FILE [--concurrency 8] [--cache-dir DIR]
//
// The spec is JSON: {"releases": [{"name", "namespace", "chart" (a chart folder), "values"}]}.
// Releases are installed --concurrency at a time (a worker pool, like helm-controller's
// --concurrent reconciles); the JSON printed on stdout holds the wall seconds from the first
// install to the last release ready, and each release's seconds. Exit 1 if any install fails.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
)

type release struct {
	Name      string                 `json:"name"`
	Namespace string                 `json:"namespace"`
	Chart     string                 `json:"chart"`
	Values    map[string]interface{} `json:"values"`
}

type spec struct {
	Releases []release `json:"releases"`
}

type result struct {
	Name      string  `json:"name"`
	Namespace string  `json:"namespace"`
	Seconds   float64 `json:"seconds"`
	Status    string  `json:"status,omitempty"`
	Error     string  `json:"error,omitempty"`
}

type output struct {
	Seconds     float64  `json:"seconds"`
	Concurrency int      `json:"concurrency"`
	HelmVersion string   `json:"helm_version"`
	Releases    []result `json:"releases"`
}

type options struct {
	kubeconfig string
	cacheDir   string
	qps        float32
	burst      int
	timeout    time.Duration
}

func install(ctx context.Context, o options, r release) result {
	t0 := time.Now()
	res := result{Name: r.Name, Namespace: r.Namespace}
	fail := func(err error) result {
		res.Seconds = time.Since(t0).Seconds()
		res.Error = err.Error()
		return res
	}
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &o.kubeconfig
	flags.Namespace = &r.Namespace
	flags.CacheDir = &o.cacheDir
	flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.QPS, c.Burst = o.qps, o.burst
		return c
	}
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, r.Namespace, "secret", func(string, ...interface{}) {}); err != nil {
		return fail(fmt.Errorf("helm init: %w", err))
	}
	chrt, err := loader.Load(r.Chart)
	if err != nil {
		return fail(fmt.Errorf("load chart %s: %w", r.Chart, err))
	}
	in := action.NewInstall(cfg)
	in.ReleaseName = r.Name
	in.Namespace = r.Namespace
	in.CreateNamespace = true
	in.Wait = true
	in.WaitForJobs = true
	in.Timeout = o.timeout
	in.TakeOwnership = true
	in.Devel = true
	in.SkipCRDs = true
	rel, err := in.RunWithContext(ctx, chrt, r.Values)
	if err != nil {
		return fail(err)
	}
	res.Seconds = time.Since(t0).Seconds()
	res.Status = rel.Info.Status.String()
	return res
}

func main() {
	var o options
	var specPath, helmVersion string
	var concurrency int
	var qps float64
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster")
	flag.StringVar(&specPath, "spec", "", "JSON file of the releases")
	flag.StringVar(&o.cacheDir, "cache-dir", "", "discovery cache folder (a fresh one per run: a cold start)")
	flag.IntVar(&concurrency, "concurrency", 8, "releases installed at a time")
	flag.Float64Var(&qps, "qps", 500, "client QPS (rebuild gives helm-controller --kube-api-qps=500)")
	flag.IntVar(&o.burst, "burst", 1000, "client burst (rebuild gives helm-controller --kube-api-burst=1000)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "per-release install timeout (helm-controller's default)")
	flag.StringVar(&helmVersion, "helm-version", "v3.19.0", "recorded in the output (go.mod pins it)")
	flag.Parse()
	o.qps = float32(qps)
	if o.kubeconfig == "" || specPath == "" || concurrency < 1 {
		fmt.Fprintln(os.Stderr, "usage: helmfloor --kubeconfig FILE --spec FILE [--concurrency N] [--cache-dir DIR]")
		os.Exit(2)
	}
	if o.cacheDir == "" {
		dir, err := os.MkdirTemp("", "helmfloor-cache-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer os.RemoveAll(dir)
		o.cacheDir = dir
	}
	raw, err := os.ReadFile(specPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var s spec
	if err := json.Unmarshal(raw, &s); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", specPath, err)
		os.Exit(2)
	}
	ctx := context.Background()
	results := make([]result, len(s.Releases))
	jobs := make(chan int)
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] = install(ctx, o, s.Releases[i])
			}
		}()
	}
	for i := range s.Releases {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	out := output{Seconds: time.Since(t0).Seconds(), Concurrency: concurrency, HelmVersion: helmVersion, Releases: results}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
	for _, r := range results {
		if r.Error != "" {
			fmt.Fprintf(os.Stderr, "helmfloor: release %s/%s failed: %s\n", r.Namespace, r.Name, r.Error)
			os.Exit(1)
		}
	}
}
