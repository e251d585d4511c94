// Command crireset stops and removes every pod sandbox of a CRI runtime, so that
// the runtime tears down each pod's network (CNI DEL) and mounts before the local
// cluster is shut down. With -list it only prints the sandboxes and containers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "path of the runtime's unix socket")
	list := flag.Bool("list", false, "only list sandboxes and containers")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "crireset: -endpoint is required")
		os.Exit(2)
	}
	conn, err := grpc.NewClient("unix://"+*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crireset:", err)
		os.Exit(1)
	}
	defer conn.Close()
	rs := runtime.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()

	pods, err := rs.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crireset: list sandboxes:", err)
		os.Exit(1)
	}
	if *list {
		ctrs, err := rs.ListContainers(ctx, &runtime.ListContainersRequest{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "crireset: list containers:", err)
			os.Exit(1)
		}
		for _, p := range pods.Items {
			fmt.Printf("sandbox %.13s %-8s %s/%s\n", p.Id, p.State, p.Metadata.Namespace, p.Metadata.Name)
		}
		for _, c := range ctrs.Containers {
			fmt.Printf("container %.13s %-16s %s (sandbox %.13s)\n", c.Id, c.State, c.Metadata.Name, c.PodSandboxId)
		}
		return
	}
	failed := 0
	for _, p := range pods.Items {
		if _, err := rs.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "stop %s/%s: %v\n", p.Metadata.Namespace, p.Metadata.Name, err)
			failed++
			continue
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "remove %s/%s: %v\n", p.Metadata.Namespace, p.Metadata.Name, err)
			failed++
			continue
		}
		fmt.Printf("removed %s/%s\n", p.Metadata.Namespace, p.Metadata.Name)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
