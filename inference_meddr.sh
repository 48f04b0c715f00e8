#!/usr/bin/env bash
# Batch evaluation of the MedDr generalist — not available yet.
echo "inference_meddr.sh: MedDr inference is not available yet in this release." >&2
echo "Available now: specialists (python -m gsco.specialists.train, bash inference_specialist.sh)." >&2
exit 2
