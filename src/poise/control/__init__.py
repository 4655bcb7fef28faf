"""Control: deep RL agents (stable-baselines3) attacked through their actions and trained against it, and
Lipschitz-bounded feedback policies cloned from experts, certified against measurement attacks.

``envs`` (gymnasium environments and their state), ``agents`` (SB3 PPO/SAC/TD3/DDPG with zoo-like
defaults, and the view attacks take of them), ``action_attacks`` (random δ, MAS, LAS as gymnasium
wrappers), ``adversarial_training`` (MAS/LAS or NR-MDP perturbations while training), ``evaluation``
(return under attack over seeds and budgets), ``report``; ``lipschitz/`` holds the Lipschitz policies.
"""
