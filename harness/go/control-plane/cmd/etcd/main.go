// Command etcd is etcd's own server entry point (go.etcd.io/etcd/server/v3/etcdmain) at the version
// k8s.io/kubernetes pins, so the harness runs the etcd its kube-apiserver was tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
