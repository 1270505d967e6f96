from django.apps import AppConfig


class RebalancerConfig(AppConfig):
    """The project package. An installed app only for its migration history (0001-0003 created
    the console's and the service's tables, 0004 hands their state to those apps) and its
    project-wide commands (`apidocs`, `diffsettings`, `inventory`)."""

    default = True
    name = "rebalancer"
    verbose_name = "Rebalancer"
