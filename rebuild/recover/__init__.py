"""The recover pipeline: context, desired state loading, plan, stacks, up, converge and verify."""
