# Report: paired comparisons against the best model, the tidy table, the summary tables and
# the figures. Outputs flagged with report() are the pages of `snakemake --report`, each
# with its caption in workflow/report/ (what it shows, how it was computed, which settings).


rule compare_models:
    input:
        unpack(compare_inputs),
    output:
        rows=paths.compare(),
    params:
        metric=comparison_metric,
        n_bootstrap=comparison_n_bootstrap,
        seed=CONFIG["seed"],
    log:
        paths.log("compare_models", "{protocol}/{dataset}/{setting}"),
    benchmark:
        paths.benchmark("compare_models", "{protocol}/{dataset}/{setting}"),
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
        table=report(paths.TABLE, caption="../report/table.rst", category="summary"),
    log:
        paths.log("table"),
    benchmark:
        paths.benchmark("table"),
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
        markdown=report(paths.SUMMARY_MD, caption="../report/summary.rst", category="summary"),
        latex=report(paths.SUMMARY_TEX, caption="../report/summary.rst", category="summary"),
        html=report(paths.SUMMARY_HTML, caption="../report/summary.rst", category="summary"),
        cells=paths.SUMMARY_CELLS,
    params:
        headline=STUDY.headline_metrics(),
        study=CONFIG["study"],
        left_out=STUDY.left_out_settings("invariance"),
    log:
        paths.log("summary"),
    benchmark:
        paths.benchmark("summary"),
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
            paths.PROTOCOL_FIGURE,
            caption="../report/heatmap.rst",
            category="{protocol}",
            subcategory="heatmap",
        ),
        pdf=paths.PROTOCOL_FIGURE_PDF,
    params:
        metric=figure_metric,
    log:
        paths.log("figure", "{protocol}"),
    benchmark:
        paths.benchmark("figure", "{protocol}"),
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
            paths.BARS,
            caption="../report/bars.rst",
            category="{protocol}",
            subcategory="bar chart",
        ),
        pdf=paths.BARS_PDF,
    log:
        paths.log("bars", "{protocol}"),
    benchmark:
        paths.benchmark("bars", "{protocol}"),
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
            paths.RADAR,
            caption="../report/radar.rst",
            category="models",
            subcategory="radar chart",
        ),
        pdf=paths.RADAR_PDF,
    log:
        paths.log("radar", "{model}"),
    benchmark:
        paths.benchmark("radar", "{model}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/radar.py"
