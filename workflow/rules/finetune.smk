# Finetune (many-shot): backbone + new linear head, all trainable, published recipe.


rule finetune:
    input:
        weights=rules.convert_weights.output.weights,
        cache=rules.cache_images.output.cache,
        index=rules.index_dataset.output.index,
    output:
        rows=paths.ROWS.replace("{protocol}", "finetune").replace("{variant}", paths.MANY_SHOT),
        predictions=paths.PREDICTIONS.replace("{protocol}", "finetune").replace("{variant}", paths.MANY_SHOT),
    params:
        settings=protocol_settings("finetune"),
        precision=config["precision"],
        device=config["device"],
        seed=config["seed"],
    log:
        "logs/finetune/{model}/{dataset}.log",
    benchmark:
        "benchmarks/finetune/{model}/{dataset}.tsv"
    threads: 8
    resources:
        mem_mb=12000,
        runtime=720,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/finetune.py"
