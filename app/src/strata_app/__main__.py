import torch

print(f"strata-app on torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
