"""The report-generation specialist: an R2GenGPT-style Swin encoder + Llama decoder, its data, training and
evaluation."""
