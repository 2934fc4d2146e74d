"""CMIGBench's metrics: consistency (aCCS, aFID), text alignment (aTIS) and the four editing accuracies."""
