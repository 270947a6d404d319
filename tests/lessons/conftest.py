import sys
from pathlib import Path

# The lesson tests share wrong_answers.py (--import-mode=importlib puts no test folder on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
