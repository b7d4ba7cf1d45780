# Linear probe (many-shot): logistic regression on frozen features, C selected on a
# seeded train/val split of the training set, refit, test once.


rule linear_probe:
    input:
        features=rules.extract_features.output.features,
    output:
        rows=paths.ROWS.replace("{protocol}", "linear").replace("{variant}", paths.MANY_SHOT),
        predictions=paths.PREDICTIONS.replace("{protocol}", "linear").replace("{variant}", paths.MANY_SHOT),
    params:
        settings=protocol_settings("linear"),
        device=config["device"],
        seed=config["seed"],
    log:
        "logs/linear_probe/{model}/{dataset}.log",
    benchmark:
        "benchmarks/linear_probe/{model}/{dataset}.tsv"
    threads: 2
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/linear_probe.py"
