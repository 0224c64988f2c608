"""The study (Li, Zhang & He 2022, the stability-efficiency dilemma): its runs (`grid`, `presets`, `tune`), its
statistics (`stats`) and its report (`report`). It sits above the trainer and the analysis and uses their
public APIs; neither imports it:

    gradvar study --preset quick -o runs/quick-report   # a demonstration, no verdict: about 7 min on 2 CPU cores
    gradvar study --preset cpu -o reports/cpu           # the CPU study, 22 runs, about 75 min on 2 cores
    gradvar study --preset gpu-117m -o reports/gpu-117m # GPT-2 117M on one H100/H200, about 6.5 min
"""
