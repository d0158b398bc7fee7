"""Batch-system clusters: SLURMCluster, PBSCluster, SGECluster on the JobQueueCluster base."""
