// @kos/kms-adapters/prometheus — KOS metrics through prom-client (install `prom-client`: an optional peer dependency).
export {
  createPrometheusMetrics,
  DEFAULT_SHARE_FETCH_BUCKETS,
  type PrometheusMetrics,
  type PrometheusMetricsOptions,
} from './observability/prometheus-metrics.js';
