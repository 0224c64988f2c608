"""The baseline-versus-SLW study: runs a grid of trainings (trainer) and writes the report on them
(analysis). It sits above both, so neither imports the other:

    gradvar study --preset quick -o reports/quick          # < 10 min on 2 CPU cores
    gradvar study --preset cpu -o reports/cpu              # the full CPU study, < 90 min on 2 cores
    gradvar study --preset gpu-117m -o reports/gpu-117m    # GPT-2 117M on one H100/H200, ~10 min
"""
