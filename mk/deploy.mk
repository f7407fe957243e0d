# Deployment: container images and the Helm chart (docs/deploy.md).
# Uses $(PY), $(UV) and $(VENV) from the root Makefile.

.PHONY: images images-check images-rehearsal images-list sbom chart-check chart-package chart-readme

IMAGES ?=
GPU ?= 0

images: setup ## build the container images with podman (IMAGES="gateway scan" for some; GPU=1 adds the CUDA variants)
	$(PY) scripts/images.py build $(IMAGES) $(if $(filter 1,$(GPU)),--gpu)

images-check: setup ## build the gateway and scan images, run them with podman, check health, Describe and SIGTERM (slow: minutes)
	$(PY) scripts/images.py check

images-rehearsal: setup ## run the chart's gateway + scan pods with podman kube play, reduce an I16 scan (upload, and by path on a data mount the gateway lacks), run the helm-test pods (validate), take them down (after images-check)
	$(PY) scripts/rehearsal.py

sbom: setup ## an SBOM per image (CycloneDX 1.5 JSON from uv.lock) into dist/sbom/ (GPU=1 adds the CUDA variants)
	$(PY) scripts/sbom.py $(IMAGES) $(if $(filter 1,$(GPU)),--gpu)

images-list: ## the image names and tags (from images/images.toml)
	@python3 scripts/images.py list

chart-check: setup ## helm lint + template (default and GPU values) + kubernetes-validate --strict, offline
	$(PY) scripts/chart-check.py

chart-readme: setup ## write charts/panreduce/README.md from the comments and @param lines of values.yaml
	$(PY) scripts/chart-readme.py

chart-package: chart-check ## package charts/panreduce into dist/ (after chart-check), then lint and render the package itself
	scripts/chart-package.sh dist
