"""GSCo: generalist-specialist collaboration for medical image analysis."""

__version__ = "0.1.0"
