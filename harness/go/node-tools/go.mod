// Small programs of keda-harness's offline kind node image (ci/images/kind-node.sh), built static
// (CGO_ENABLED=0) so they run in any root file system. No dependencies.
//   cmd/runc-wrapper: keda-harness-runc, a runc front for machines whose capability bounding set lacks
//                     CAP_SYS_RESOURCE (dockerd's default runtime there, and containerd's runc in the node).
//   cmd/pause:        the pod sandbox's pause program (registry.k8s.io/pause is not reachable here).
module keda-harness/node-tools

go 1.25.0
