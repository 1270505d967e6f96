from django.apps import AppConfig


class RebalancerConfig(AppConfig):
    name = "rebalancer"
    verbose_name = "Rebalancer"
