"""Control: environments, experts, agents, attacks on actions and measurements, robust policies."""
