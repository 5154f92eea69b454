#!/usr/bin/env bash
# Redraw the README's figures (docs/img/) from the runs of the CPU configs, in one command:
#     bash scripts/docs-img.sh            # CORES=N to use more cores
# Each figure is drawn again from its run's records (--forcerun: the drawing code may have changed since) and
# copied under its docs name. A run that is not there yet is made first, which takes its time in the README's
# table of configs (the CIFAR-10 one needs data/cifar10 linked; see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
cores=${CORES:-2}

# config, experiment, then figure:docs-name pairs
draw() {
  local config=$1 experiment=$2
  shift 2
  local figures=() pair
  for pair in "$@"; do figures+=("${pair%%:*}"); done
  snakemake "${figures[@]}" --cores "$cores" --configfile "$config" --forcerun "${figures[@]}"
  for pair in "$@"; do
    cp "results/$experiment/figures/${pair%%:*}.png" "docs/img/${pair#*:}.png"
    echo "docs/img/${pair#*:}.png <- results/$experiment/figures/${pair%%:*}.png"
  done
}

draw workflow/configs/cifar10-resnet20-cpu.yaml cifar10-resnet20-cpu fig1a:cifar10-cpu-fig1a fig2e:cifar10-cpu-fig2e
draw workflow/configs/zoo-cpu.yaml zoo-cpu-fashion-lenet zoo_accuracy:zoo-cpu-accuracy
draw workflow/configs/imp-cpu.yaml imp-cpu-fashion-lenet imp_paths:imp-cpu-paths
