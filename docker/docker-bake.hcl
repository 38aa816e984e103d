# Every image in one command, from the repository root:
#
#   docker buildx bake -f docker/docker-bake.hcl --load                 # catga/*:0.1.0, into the local engine
#   REGISTRY=registry.example/team TAG=1.2.3 \
#     docker buildx bake -f docker/docker-bake.hcl --push               # build and push
#
# REGISTRY is the repository prefix the images are named under (default
# `catga`, the names the manifests and Compose use); TAG their tag. The same
# two values retarget the other paths: Compose (CATGA_REGISTRY, CATGA_TAG),
# kustomize (the `images:` block of k8s/kustomize/base) and plain
# `kubectl apply -f k8s/` (docs/kubernetes.md). Each target is one stage of
# docker/Dockerfile; the builder stage is shared, so it compiles once.

variable "REGISTRY" {
  default = "catga"
}

variable "TAG" {
  default = "0.1.0"
}

group "default" {
  targets = ["order-api", "order-service", "notification-service", "loadgen"]
}

target "_common" {
  context    = "."
  dockerfile = "docker/Dockerfile"
  args = {
    VERSION = TAG
  }
}

target "order-api" {
  inherits = ["_common"]
  target   = "order-api"
  tags     = ["${REGISTRY}/order-api:${TAG}"]
}

target "order-service" {
  inherits = ["_common"]
  target   = "order-service"
  tags     = ["${REGISTRY}/order-service:${TAG}"]
}

target "notification-service" {
  inherits = ["_common"]
  target   = "notification-service"
  tags     = ["${REGISTRY}/notification-service:${TAG}"]
}

target "loadgen" {
  inherits = ["_common"]
  target   = "loadgen"
  tags     = ["${REGISTRY}/loadgen:${TAG}"]
}
