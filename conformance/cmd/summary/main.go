// Command summary prints a per-profile summary of a Gateway API ConformanceReport
// and exits 1 when a profile's core or extended (declared features) result failed.
//
//	summary report.yaml [wall-time]
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: summary REPORT.yaml [WALL-TIME]")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		os.Exit(2)
	}
	var r confv1.ConformanceReport
	if err := yaml.Unmarshal(raw, &r); err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		os.Exit(2)
	}
	fmt.Printf("Gateway API %s (%s channel), %s %s, mode %s\n", r.GatewayAPIVersion, r.GatewayAPIChannel,
		r.Implementation.Project, r.Implementation.Version, r.Mode)
	if len(os.Args) > 2 {
		fmt.Printf("suite wall time: %s\n", os.Args[2])
	}
	profiles := r.ProfileReports
	sort.Slice(profiles, func(i, j int) bool { return profiles[i].Name < profiles[j].Name })
	failed := false
	fmt.Printf("%-14s %-9s %6s %6s %7s   %-9s %6s %6s %7s\n", "PROFILE", "CORE", "pass", "fail", "skip", "EXTENDED", "pass", "fail", "skip")
	for _, p := range profiles {
		ext := confv1.ExtendedStatus{}
		if p.Extended != nil {
			ext = *p.Extended
		}
		fmt.Printf("%-14s %-9s %6d %6d %7d   %-9s %6d %6d %7d\n", p.Name,
			orNone(string(p.Core.Result)), p.Core.Statistics.Passed, p.Core.Statistics.Failed, p.Core.Statistics.Skipped,
			orNone(string(ext.Result)), ext.Statistics.Passed, ext.Statistics.Failed, ext.Statistics.Skipped)
		if len(p.Core.FailedTests) > 0 {
			fmt.Printf("  core failed: %s\n", strings.Join(p.Core.FailedTests, ", "))
		}
		if len(ext.FailedTests) > 0 {
			fmt.Printf("  extended failed: %s\n", strings.Join(ext.FailedTests, ", "))
		}
		if len(ext.UnsupportedFeatures) > 0 {
			fmt.Printf("  extended features not declared: %d\n", len(ext.UnsupportedFeatures))
		}
		if p.Core.Result == confv1.Failure || ext.Result == confv1.Failure {
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
