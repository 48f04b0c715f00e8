#!/usr/bin/env bash
# GSCo collaboration (MoED / RAD) with the MedDr generalist — not available yet.
echo "inference_gsco.sh: the GSCo collaboration pipeline is not available yet in this release." >&2
echo "Available now: specialists and their retrieval index (bash inference_specialist.sh), the inputs of MoED and RAD." >&2
exit 2
