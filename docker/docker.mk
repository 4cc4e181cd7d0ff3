# Container image targets. The Makefile includes this file; it also works on
# its own: make -f Makefile -f docker/docker.mk docker (the guard makes a
# second inclusion a no-op).
ifndef KMESH_DOCKER_MK
KMESH_DOCKER_MK := 1

# DOCKER may carry options: DOCKER="podman --root DIR --runroot DIR".
DOCKER     ?= docker
IMAGE      ?= localhost/kmesh
TAG        ?= latest
BASE_IMAGE ?= localhost/kmesh-base:bookworm
BASE_CACHE ?= /var/cache/kmesh-base
OUT        ?= $(CURDIR)/out
GO         ?= go

# what base-image and the e2e need from Debian (`make deps` installs them
# when this file is included after the Makefile's DEB_PACKAGES)
DEB_PACKAGES += podman runc debootstrap

.PHONY: base-image docker e2e

base-image: ## make the Debian base image locally with debootstrap (BASE_IMAGE; no registry; cached in BASE_CACHE)
	DOCKER='$(DOCKER)' BASE_IMAGE='$(BASE_IMAGE)' BASE_CACHE='$(BASE_CACHE)' docker/base-image.sh

docker: ## build the image IMAGE:TAG with DOCKER (default docker; DOCKER=podman), from BASE_IMAGE
	GO='$(GO)' docker/context.sh $(OUT)/image >/dev/null
	$(DOCKER) build -f docker/kmesh.dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE):$(TAG) $(OUT)/image
	@$(DOCKER) image inspect --format '$(IMAGE):$(TAG): {{.Size}} bytes' $(IMAGE):$(TAG)

E2E_TIMEOUT ?= 20m
e2e: deps ## base image, image (docker CLI and podman), container start/restart/uninstall on this host
	$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./deploy/e2e

endif
