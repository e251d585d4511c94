// Command etcd is the etcd server, built from the etcd server module at the
// version Kubernetes itself is tested with (pinned in ../go.mod).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
