# Weighted kNN probe (manyshot): cosine similarity on the cached features, the k nearest
# training images vote with weights exp(similarity / temperature), as in DINO's evaluation.


rule knn:
    input:
        features=rules.extract_features.output.features,
    output:
        rows=paths.rows("knn", setting=registry.MANYSHOT),
        predictions=paths.predictions("knn", setting=registry.MANYSHOT),
    params:
        settings=protocol_settings("knn"),
        device=CONFIG["device"],
        seed=CONFIG["seed"],
    log:
        paths.log("knn", "{model}/{dataset}"),
    benchmark:
        paths.benchmark("knn", "{model}/{dataset}")
    threads: 2
    resources:
        mem_mb=sized("knn", "mem_mb"),
        runtime=sized("knn", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/knn.py"
