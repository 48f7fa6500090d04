"""Small typed factories over grafana-foundation-sdk, so every panel is made the same way.

Every factory takes the three things the dashboard style asks of each panel (title, description,
unit) as required arguments: a panel without them cannot be written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMapping,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

# Panels follow the dashboard's `$datasource` variable, so one JSON works against any Prometheus.
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel: the expression and how its series are named in the legend."""

    expr: str
    legend: str = "__auto"


def quantiles(histogram: str, legend: str) -> list[Query]:
    """p50/p90/p99 of a histogram by action, over Grafana's rate interval."""
    return [
        Query(
            f"histogram_quantile({q}, sum by (le, action) (rate({histogram}_bucket[$__rate_interval])))",
            f"p{round(q * 100)} {legend}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def _target(query: Query, ref_id: str, *, instant: bool, as_table: bool) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .datasource(PROMETHEUS)
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref_id)
    )
    target = target.instant() if instant else target.range()
    if as_table:
        target = target.format(PromQueryFormat.TABLE)
    return target


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (Grafana's "base")."""
    return dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in steps]
    )


def value_texts(texts: dict[int, tuple[str, str]]) -> list[ValueMapping]:
    """Map numeric states to words and colours (1 -> "Up", green)."""
    return [
        ValueMap(
            options={
                str(value): ValueMappingResult(text=text, color=color, index=index)
                for index, (value, (text, color)) in enumerate(sorted(texts.items()))
            }
        )
    ]


UP_DOWN = value_texts({0: ("Down", "red"), 1: ("Up", "green")})
BREAKER = value_texts({0: ("Closed", "green"), 1: ("Open", "red")})


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(
        common.SortOrder.DESCENDING
    )


def time_series(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    height: int = 8,
    bars: bool = False,
    stacked: bool = False,
    min_value: float | None = 0,
    threshold_line: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(width)
        .height(height)
        .legend(_legend())
        .tooltip(_tooltip())
        .line_width(1)
        .fill_opacity(80 if bars else 10)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .show_points(common.VisibilityMode.NEVER)
    )
    for index, query in enumerate(queries):
        panel = panel.with_target(_target(query, _ref_id(index), instant=False, as_table=False))
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if min_value is not None:
        panel = panel.min(min_value)
    if threshold_line is not None:
        # A dashed line at the threshold (e.g. runtime = timeout) without colouring the series.
        panel = panel.thresholds(thresholds((None, "transparent"), (threshold_line, "red"))).thresholds_style(
            # "Tresholds" (sic) is the SDK's spelling.
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    return panel


def single_stat(
    title: str,
    description: str,
    unit: str,
    query: Query,
    *,
    steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mappings: list[ValueMapping] | None = None,
    width: int = 4,
    height: int = 4,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .decimals(0)
        .datasource(PROMETHEUS)
        .span(width)
        .height(height)
        .with_target(_target(query, "A", instant=True, as_table=False))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE)
        .thresholds(thresholds(*steps))
    )
    if mappings is not None:
        panel = panel.mappings(mappings)
    return panel


def state_timeline(
    title: str,
    description: str,
    queries: Sequence[Query],
    mappings: list[ValueMapping],
    *,
    width: int = 12,
    height: int = 8,
) -> statetimeline.Panel:
    """States over time (up/down, open/closed); the unit is "none" because mappings name the values."""
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .unit("none")
        .datasource(PROMETHEUS)
        .span(width)
        .height(height)
        .mappings(mappings)
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .legend(_legend())
        .tooltip(_tooltip())
        .fill_opacity(70)
        .line_width(0)
        .thresholds(thresholds((None, "green")))
    )
    for index, query in enumerate(queries):
        panel = panel.with_target(_target(query, _ref_id(index), instant=False, as_table=False))
    return panel


def instant_table(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    transformations: Sequence[DataTransformerConfig],
    columns: dict[str, list[DynamicConfigValue]] | None = None,
    sort_by: str | None = None,
    width: int = 12,
    height: int = 8,
) -> table.Panel:
    """A table of the queries' current values, one row per series (merged on their labels)."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(width)
        .height(height)
        .show_header(True)
        .cell_height(common.TableCellHeight.SM)
    )
    for index, query in enumerate(queries):
        panel = panel.with_target(_target(query, _ref_id(index), instant=True, as_table=True))
    for transformation in transformations:
        panel = panel.with_transformation(transformation)
    for column, properties in sorted((columns or {}).items()):
        panel = panel.override_by_name(column, properties)
    if sort_by is not None:
        panel = panel.sort_by([common_builders.TableSortByFieldState().display_name(sort_by).desc(True)])
    return panel


def column(*, unit: str, mappings: list[ValueMapping] | None = None) -> list[DynamicConfigValue]:
    """Field overrides for one table column: its own unit, and words for its values if given."""
    properties = [DynamicConfigValue(id_val="unit", value=unit)]
    if mappings is not None:
        properties.append(DynamicConfigValue(id_val="mappings", value=mappings))
    return properties


def organize(*, exclude: Sequence[str], rename: dict[str, str]) -> DataTransformerConfig:
    """Hide label columns nobody needs and give value columns readable names."""
    return DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {name: True for name in exclude},
            "renameByName": dict(rename),
        },
    )


def merge() -> DataTransformerConfig:
    """Join several instant queries into one row per label set."""
    return DataTransformerConfig(id_val="merge", options={})


def row(title: str) -> dash.Row:
    return dash.Row(title).collapsed(False)
