"""Building blocks the Pulumi programs in stacks/ import (so they stay a few lines each)."""
