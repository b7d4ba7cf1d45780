# Report: paired comparisons against the best model, the tidy table, the summary tables and
# the figures. Outputs flagged with report() are the pages of `snakemake --report`, each
# with its caption in workflow/report/ (what it shows, how it was computed, which settings).


rule compare_models:
    input:
        unpack(compare_inputs),
    output:
        rows=registry.compare_path(),
    params:
        metric=comparison_metric,
        n_bootstrap=comparison_n_bootstrap,
        seed=CONFIG["seed"],
    log:
        "logs/compare_models/{protocol}/{dataset}/{setting}.log",
    benchmark:
        "benchmarks/compare_models/{protocol}/{dataset}/{setting}.tsv",
    threads: 1
    resources:
        mem_mb=sized("compare_models", "mem_mb"),
        runtime=sized("compare_models", "runtime"),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/compare_models.py"


rule table:
    input:
        rows=table_inputs,
    output:
        table=report("reports/table.csv", caption="../report/table.rst", category="summary"),
    log:
        "logs/table.log",
    benchmark:
        "benchmarks/table.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/table.py"


rule summary:
    input:
        table=rules.table.output.table,
        published=published_numbers(),
    output:
        markdown=report("reports/summary.md", caption="../report/summary.rst", category="summary"),
        latex=report("reports/summary.tex", caption="../report/summary.rst", category="summary"),
        html=report("reports/summary.html", caption="../report/summary.rst", category="summary"),
        cells="reports/summary.csv",
    params:
        headline=STUDY.headline_metrics(),
        study=CONFIG["study"],
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/summary.py"


rule figure:
    input:
        table=rules.table.output.table,
    output:
        figure=report(
            "reports/figures/{protocol}.png",
            caption="../report/heatmap.rst",
            category="{protocol}",
            subcategory="heatmap",
        ),
        pdf="reports/figures/{protocol}.pdf",
    params:
        metric=figure_metric,
    log:
        "logs/figure/{protocol}.log",
    benchmark:
        "benchmarks/figure/{protocol}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure.py"


rule bars:
    input:
        cells=rules.summary.output.cells,
    output:
        png=report(
            "reports/figures/bars/{protocol}.png",
            caption="../report/bars.rst",
            category="{protocol}",
            subcategory="bar chart",
        ),
        pdf="reports/figures/bars/{protocol}.pdf",
    log:
        "logs/bars/{protocol}.log",
    benchmark:
        "benchmarks/bars/{protocol}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/bars.py"


rule radar:
    input:
        cells=rules.summary.output.cells,
    output:
        png=report(
            "reports/figures/radar/{model}.png",
            caption="../report/radar.rst",
            category="models",
            subcategory="radar chart",
        ),
        pdf="reports/figures/radar/{model}.pdf",
    log:
        "logs/radar/{model}.log",
    benchmark:
        "benchmarks/radar/{model}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/radar.py"
