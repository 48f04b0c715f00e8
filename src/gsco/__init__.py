"""GSCo: generalist-specialist collaboration for medical image analysis."""

import logging

__version__ = "0.1.0"

# torchao (imported by transformers when installed) registers enums with torch's pytree at import, which torch >= 2.14
# reports as deprecated on every start; it is not ours to fix and says nothing about the run.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
