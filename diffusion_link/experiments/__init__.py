"""Helpers of the training scripts, the benchmarks and the experiment, which the model itself never imports: the
depth rule (`depth_selection`), synthetic gap worlds (`synthetic_gap`), embedding files (`embedding_files`), script
arguments, config-derived defaults and resuming (`script_arguments`), process-group set-up and teardown
(`distributed`), running a training recipe as a process (`recipes`), and crash-safe writes (`atomic_files`)."""
