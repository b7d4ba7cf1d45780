# Weighted kNN probe (manyshot): cosine similarity on the cached features, the k nearest
# training images vote with weights exp(similarity / temperature), as in DINO's evaluation.


rule knn:
    input:
        features=rules.extract_features.output.features,
    output:
        rows=registry.rows_path("knn", setting=registry.MANYSHOT),
        predictions=registry.predictions_path("knn", setting=registry.MANYSHOT),
    params:
        settings=protocol_settings("knn"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        "logs/knn/{model}/{dataset}.log",
    benchmark:
        "benchmarks/knn/{model}/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=sized("knn", "mem_mb"),
        runtime=sized("knn", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/knn.py"
