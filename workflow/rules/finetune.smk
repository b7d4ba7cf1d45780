# Finetune (manyshot): backbone + new linear head, all trainable, published recipe.


rule finetune:
    input:
        unpack(finetune_full_cache),
        weights=rules.convert_weights.output.weights,
        cache=rules.cache_images.output.cache,
        index=rules.index_dataset.output.index,
    output:
        rows=registry.rows_path("finetune", setting=registry.MANYSHOT),
        predictions=registry.predictions_path("finetune", setting=registry.MANYSHOT),
    params:
        settings=finetune_settings(),
        metric=dataset_metric,
        precision=CONFIG["precision"],
        device=CONFIG["device"],
        deterministic=CONFIG["deterministic"],
        seed=CONFIG["seed"],
    log:
        "logs/finetune/{model}/{dataset}.log",
    benchmark:
        "benchmarks/finetune/{model}/{dataset}.tsv"
    threads: 8
    resources:
        gpu=gpus,
        mem_mb=sized("finetune", "mem_mb"),
        runtime=sized("finetune", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/finetune.py"
