"""AlphaAlign: RL with verifiable format/refusal rewards and a group-normalised helpfulness reward."""
