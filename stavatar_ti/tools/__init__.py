"""What the command-line tools in scripts/ share: run folders and split views (runs.py), image
strips and MP4 / OBJ writing (media.py), the evaluation loop (evaluation.py)."""
