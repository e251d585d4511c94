// Package conformance runs the upstream Gateway API conformance suite against
// CitoRoute. It is compiled with `go test -c`, packaged as an image and run as a
// Job inside the local cluster by ./run; it also runs directly with
// `go test -timeout 3h -run TestCitoRoute . -args --kubeconfig ...`.
//
// Every suite flag (sigs.k8s.io/gateway-api/conformance/utils/flags) still works;
// this harness only supplies CitoRoute's defaults for those left unset.
package conformance

import (
	"context"
	_ "embed"
	"flag"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	"k8s.io/apimachinery/pkg/util/sets"
)

//go:embed VERSION
var version string

//go:embed supported-features.txt
var featuresFile string

const (
	defaultGatewayClass = "citoroute"
	defaultProfiles     = "GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS,MESH-HTTP"
)

var featuresFrom = flag.String("citoroute.features-from", "auto",
	"where the supported features come from when no suite feature flag is given: "+
		"status (GatewayClass status), file (supported-features.txt), auto (file if it lists any, else status)")

// flagSet reports whether a suite flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// listedFeatures returns the feature names in supported-features.txt.
func listedFeatures() []string {
	var out []string
	for _, line := range strings.Split(featuresFile, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

// declaresFeatures reports whether the GatewayClass lists any supported feature in its status.
func declaresFeatures(t *testing.T, c client.Client, name string) bool {
	gc := &gatewayv1.GatewayClass{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, gc); err != nil {
		t.Logf("GatewayClass %q: %v", name, err)
		return false
	}
	return len(gc.Status.SupportedFeatures) > 0
}

func TestCitoRoute(t *testing.T) {
	opts := conformance.DefaultOptions(t)

	if !flagSet("gateway-class") {
		opts.GatewayClassName = defaultGatewayClass
	}
	if !flagSet("conformance-profiles") {
		opts.ConformanceProfiles = suite.ParseConformanceProfiles(defaultProfiles)
	}
	impl := &opts.Implementation
	if impl.Organization == "" {
		impl.Organization = "citoroute"
	}
	if impl.Project == "" {
		impl.Project = "citoroute"
	}
	if impl.URL == "" {
		impl.URL = "https://github.com/citoroute/citoroute"
	}
	if impl.Version == "" {
		impl.Version = strings.TrimSpace(version)
	}
	if strings.Join(impl.Contact, "") == "" {
		impl.Contact = []string{"https://github.com/citoroute/citoroute/issues"}
	}

	manual := flagSet("supported-features") || flagSet("exempt-features") || flagSet("all-features") || flagSet("run-test")
	listed := listedFeatures()
	useFile := *featuresFrom == "file" || (*featuresFrom == "auto" && len(listed) > 0)
	if !manual && useFile {
		known := map[features.FeatureName]bool{}
		for _, f := range features.AllFeatures.UnsortedList() {
			known[f.Name] = true
		}
		set := suite.FeaturesSet{}
		for _, name := range listed {
			if !known[features.FeatureName(name)] {
				t.Fatalf("supported-features.txt: unknown feature %q", name)
			}
			set.Insert(features.FeatureName(name))
		}
		opts.SupportedFeatures = set
	}
	source := "flags / supported-features.txt"
	if !manual && !useFile {
		source = "GatewayClass status"
		if *featuresFrom == "auto" && !declaresFeatures(t, opts.Client, opts.GatewayClassName) {
			// Nothing declares features yet (no controller, or one that does not publish
			// them): test the core of the chosen profiles instead of aborting on an empty set.
			source = "profile core features only (GatewayClass declares none)"
			opts.SupportedFeatures = suite.FeaturesSet{}
			for p := range opts.ConformanceProfiles {
				if strings.HasPrefix(string(p), "MESH") {
					opts.SupportedFeatures.Insert(features.SupportMesh)
				} else {
					opts.SupportedFeatures.Insert(features.SupportGateway)
				}
			}
		}
	}
	t.Logf("CitoRoute harness: GatewayClass %q, profiles %v, features from %s",
		opts.GatewayClassName, sets.List(opts.ConformanceProfiles), source)

	conformance.RunConformanceWithOptions(t, opts)
}
