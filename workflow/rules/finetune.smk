# Finetune (manyshot): backbone + new linear head, all trainable, published recipe.


rule finetune:
    input:
        unpack(finetune_full_cache),
        weights=rules.convert_weights.output.weights,
        cache=rules.cache_images.output.cache,
        index=rules.index_dataset.output.index,
    output:
        rows=paths.rows("finetune", setting=registry.MANYSHOT),
        predictions=paths.predictions("finetune", setting=registry.MANYSHOT),
    params:
        settings=finetune_settings(),
        metric=dataset_metric,
        precision=CONFIG["precision"],
        device=CONFIG["device"],
        deterministic=CONFIG["deterministic"],
        seed=CONFIG["seed"],
    log:
        paths.log("finetune", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("finetune", "{model}/{dataset}")
    threads: 8
    resources:
        gpu=gpus,
        mem_mb=sized("finetune", "mem_mb"),
        runtime=sized("finetune", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/finetune.py"
