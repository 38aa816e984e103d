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

# One target per image, each a stage of docker/Dockerfile (a matrix target:
# Buildx 0.12 or later). `docker buildx bake ... order-api` builds one.
target "default" {
  name       = image
  matrix = {
    image = ["order-api", "order-service", "notification-service", "loadgen"]
  }
  context    = "."
  dockerfile = "docker/Dockerfile"
  target     = image
  tags       = ["${REGISTRY}/${image}:${TAG}"]
  args = {
    VERSION = TAG
  }
}
